// YAML -> RunConfig and back. Each section's keys are listed once, in a visit() function that three
// visitors walk: Reader (YAML -> struct, with type checks and unknown-key detection), Writer
// (struct -> YAML) and KeyLister (the key paths `--set` may name). So every key that loads is also
// written, and the written file loads back to the same config.
#include "train/config.h"

#include <sys/stat.h>

#if !DAEDALUS_MINIMAL  // the GPU-test build has no yaml-cpp: the structs and their checks only
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <utility>

#include "autograd/check.h"
#include "model/stages.h"
#include "train/config_keys.h"

namespace daedalus::train {

namespace {

using namespace config_keys;

#if !DAEDALUS_MINIMAL

template <typename E>
std::string alternatives(const Names<E>& names) {  // "a, b or c"
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) {
    s += i == 0 ? "" : (i + 1 == names.size() ? " or " : ", ");
    s += names[i].second;
  }
  return s;
}

// ---- small helpers ------------------------------------------------------------------------------

// How a node reads in a message: "eight" (quoted scalar text), null, a list, a map.
std::string describe(const YAML::Node& n) {
  if (n.IsNull()) return "null";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  return fmt::format("\"{}\"", n.Scalar());
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

// " (did you mean X?)" for the closest candidate within a few edits, "" otherwise.
std::string suggestion(std::string_view key, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(key, c);
    if (d < best_distance) best = &c, best_distance = d;
  }
  return best ? fmt::format(" (did you mean {}?)", *best) : std::string();
}

// Doubles in the shortest form that reads back to the same value, always with a '.' so that other
// YAML readers (PyYAML) also see a float: 0.0003, 1.0e-08, 10000.0.
std::string yaml_double(double x) {
  if (std::isnan(x)) return ".nan";
  if (std::isinf(x)) return x > 0 ? ".inf" : "-.inf";
  std::string s = fmt::format("{}", x);
  if (s.find_first_of(".e") == std::string::npos) {
    s += ".0";
  } else if (s.find('.') == std::string::npos) {
    s.insert(s.find('e'), ".0");
  }
  return s;
}

// Strict scalar parsers: the whole text must be a number of the type (no "1.0" for an integer).
template <typename T>
bool parse_number(std::string_view text, T& out) {
  if (text.starts_with('+')) text.remove_prefix(1);
  if constexpr (std::is_floating_point_v<T>) {  // YAML's .inf, -.inf, .nan (any case)
    const bool negative = text.starts_with('-');
    std::string word(text.substr(negative ? 1 : 0));
    for (char& ch : word) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (word == ".inf") return out = negative ? -INFINITY : INFINITY, true;
    if (word == ".nan" && !negative) return out = NAN, true;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

// Where the values came from, for messages: the file, and the key paths that `--set`s wrote.
struct Origin {
  std::string source;
  std::map<std::string, std::string> sets;  // key path -> the --set entry
};

// "<file>:<line>: <path>: <what>", or "--set <entry>: <path>: <what>" when a --set wrote the value.
[[noreturn]] void fail_at(const Origin& origin, const std::string& path, const YAML::Mark& mark,
                          const std::string& what) {
  for (size_t end = path.size(); end != std::string::npos && end > 0; end = path.find_last_of(".[", end - 1)) {
    const auto it = origin.sets.find(path.substr(0, end));
    if (it != origin.sets.end()) DAEDALUS_FAIL("--set {}: {}: {}", it->second, path, what);
  }
  if (mark.line >= 0) DAEDALUS_FAIL("{}:{}: {}: {}", origin.source, mark.line + 1, path, what);
  DAEDALUS_FAIL("{}: {}: {}", origin.source, path, what);
}

// ---- the three visitors -------------------------------------------------------------------------

// Reads one map of the YAML tree into a struct; absent keys keep the struct's defaults.
class Reader {
 public:
  Reader(YAML::Node node, std::string path, const Origin& origin)
      : node_(std::move(node)), path_(std::move(path)), origin_(origin) {}

  template <typename T>
  void operator()(const char* key, T& value) {
    if (const YAML::Node n = get(key); n.IsDefined()) read(n, join(key), value);
  }

  template <typename E>
  void choice(const char* key, E& value, const Names<E>& names) {
    const YAML::Node n = get(key);
    if (!n.IsDefined()) return;
    if (n.IsScalar()) {
      for (const auto& [v, name] : names) {
        if (n.Scalar() == name) return void(value = v);
      }
    }
    fail(n, join(key), fmt::format("expected {}, got {}", alternatives(names), describe(n)));
  }

  // A nested map; null or absent means all defaults.
  template <typename Fn>
  void map(const char* key, Fn&& fn) {
    const YAML::Node n = get(key);
    if (n.IsDefined() && !n.IsNull() && !n.IsMap()) fail(n, join(key), "expected a map of keys, got " + describe(n));
    Reader sub(n.IsDefined() && n.IsMap() ? n : YAML::Node(), join(key), origin_);
    fn(sub);
    sub.finish();
  }

  // exact | {mantissa_bits (default 14), promote_every (default 0 = never), chunk (default 4)}
  void accumulator(const char* key, fp8::Accumulator& value) {
    const YAML::Node n = get(key);
    if (!n.IsDefined()) return;
    if (n.IsScalar() && n.Scalar() == "exact") return void(value = {});
    if (!n.IsMap())
      fail(n, join(key), "expected exact or {mantissa_bits: N, promote_every: N, chunk: N}, got " + describe(n));
    fp8::Accumulator a{14, 0, 4};
    Reader sub(n, join(key), origin_);
    sub("mantissa_bits", a.mantissa_bits);
    sub("promote_every", a.promote_every);
    sub("chunk", a.chunk);
    sub.finish();
    value = a;
  }

  // null | {type (or rope_type): yarn, factor, original_max_position_embeddings, ...}: HF's map.
  void rope_scaling(const char* key, std::optional<model::RopeScaling>& value) {
    const YAML::Node n = get(key);
    if (!n.IsDefined()) return;
    if (n.IsNull()) return void(value.reset());
    if (!n.IsMap()) fail(n, join(key), "expected null or a map {type: yarn, factor: F, ...}, got " + describe(n));
    Reader sub(n, join(key), origin_);
    std::optional<std::string> type, rope_type;
    sub("type", type);
    sub("rope_type", rope_type);
    if (!type && !rope_type) fail(n, join(key) + ".type", "missing (only yarn is supported)");
    for (const auto& [name, t] : {std::pair{"type", type}, std::pair{"rope_type", rope_type}}) {
      if (t && *t != "yarn")
        fail(n[name], fmt::format("{}.{}", join(key), name),
             fmt::format("\"{}\" is not supported (Daedalus computes plain RoPE, rope_scaling null, and yarn)", *t));
    }
    for (const char* required : {"factor", "original_max_position_embeddings"}) {
      if (!n[required].IsDefined()) fail(n, fmt::format("{}.{}", join(key), required), "missing");
    }
    model::RopeScaling y;
    visit_rope_scaling(sub, y);
    sub.finish();
    value = y;
  }

  // [{match: GLOB, recipe: NAME}, ...]
  void overrides(const char* key, std::vector<fp8::RecipeOverride>& value) {
    const YAML::Node n = get(key);
    if (!n.IsDefined()) return;
    value.clear();
    if (n.IsNull()) return;
    if (!n.IsSequence()) fail(n, join(key), "expected a list of {match: GLOB, recipe: NAME}, got " + describe(n));
    for (size_t i = 0; i < n.size(); ++i) {
      const YAML::Node e = n[i];
      const std::string path = fmt::format("{}[{}]", join(key), i);
      if (!e.IsMap()) fail(e, path, "expected {match: GLOB, recipe: NAME}, got " + describe(e));
      for (const char* required : {"match", "recipe"}) {
        if (!e[required].IsDefined()) fail(e, path, fmt::format("missing key {}", required));
      }
      fp8::RecipeOverride o{};
      Reader sub(e, path, origin_);
      sub("match", o.match);
      sub.choice("recipe", o.recipe, recipe_names());
      sub.finish();
      value.push_back(o);
    }
  }

  // Every key of the map must have been visited: anything else is unknown (or a duplicate).
  void finish() const {
    if (!node_.IsMap()) return;
    std::vector<std::string> seen;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (!it->first.IsScalar()) fail(it->first, path_, "keys must be names, got " + describe(it->first));
      const std::string key = it->first.Scalar();
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) fail(it->first, join(key), "duplicate key");
      seen.push_back(key);
      if (std::find(visited_.begin(), visited_.end(), key) == visited_.end()) {
        fail(it->first, join(key),
             fmt::format("unknown {}{}", path_.empty() ? "section" : "key", suggestion(key, visited_)));
      }
    }
  }

 private:
  YAML::Node get(const char* key) {
    visited_.emplace_back(key);
    const YAML::Node& node = node_;  // const: a missing key is not inserted (node_ is a map or null)
    return node[key];
  }
  std::string join(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  }
  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& what) const {
    fail_at(origin_, path, at.Mark(), what);
  }

  [[noreturn]] void wrong(const YAML::Node& n, const std::string& path, std::string_view expected) const {
    fail(n, path, fmt::format("expected {}, got {}", expected, describe(n)));
  }
  // A number or boolean must be a plain scalar: a quoted "8" is a string.
  bool plain(const YAML::Node& n) const { return n.IsScalar() && n.Tag() != "!"; }

  template <typename T>
  requires std::is_integral_v<T> &&
      (!std::is_same_v<T, bool>)void read(const YAML::Node& n, const std::string& path, T& v) const {
    if (!plain(n) || !parse_number(n.Scalar(), v)) {
      wrong(n, path, std::is_signed_v<T> ? (sizeof(T) < 8 ? "a 32-bit integer" : "integer") : "integer >= 0");
    }
  }
  void read(const YAML::Node& n, const std::string& path, double& v) const {
    if (!plain(n) || !parse_number(n.Scalar(), v)) wrong(n, path, "number");
  }
  void read(const YAML::Node& n, const std::string& path, bool& v) const {
    if (!plain(n) || !YAML::convert<bool>::decode(n, v)) wrong(n, path, "true or false");
  }
  void read(const YAML::Node& n, const std::string& path, std::string& v) const {
    if (!n.IsScalar()) wrong(n, path, "string");
    v = n.Scalar();
  }
  template <typename T>
  void read(const YAML::Node& n, const std::string& path, std::optional<T>& v) const {
    if (n.IsNull()) return void(v.reset());
    T x{};
    read(n, path, x);
    v = x;
  }
  // A list of file paths or globs; one alone is a list of one. A plain number or boolean is not a
  // path (data.train: [5] is a mistake, not a file named "5"): quote it if it is one.
  void read(const YAML::Node& n, const std::string& path, std::vector<std::string>& v) const {
    v.clear();
    if (n.IsNull()) return;
    auto item = [&](const YAML::Node& x, const std::string& at) {
      double number = 0;
      bool flag = false;
      if (!x.IsScalar()) wrong(x, at, "a file path (string)");
      if (plain(x) && (parse_number(x.Scalar(), number) || YAML::convert<bool>::decode(x, flag)))
        fail(x, at,
             fmt::format("expected a file path (string), got {}; quote it (\"{}\") if that is the name", x.Scalar(),
                         x.Scalar()));
      v.push_back(x.Scalar());
    };
    if (n.IsScalar()) return item(n, path);
    if (!n.IsSequence()) wrong(n, path, "a list of file paths");
    for (size_t i = 0; i < n.size(); ++i) item(n[i], fmt::format("{}[{}]", path, i));
  }
  void read(const YAML::Node& n, const std::string& path, std::vector<int64_t>& v) const {
    v.clear();
    if (n.IsNull()) return;
    if (!n.IsSequence()) wrong(n, path, "a list of integers");
    for (size_t i = 0; i < n.size(); ++i) read(n[i], fmt::format("{}[{}]", path, i), v.emplace_back());
  }
  void read(const YAML::Node& n, const std::string& path, std::array<double, 2>& v) const {
    if (!n.IsSequence() || n.size() != 2) wrong(n, path, "a list of 2 numbers");
    for (size_t i = 0; i < 2; ++i) read(n[i], fmt::format("{}[{}]", path, i), v[i]);
  }

  YAML::Node node_;
  std::string path_;
  const Origin& origin_;
  std::vector<std::string> visited_;
};

// Emits the struct as a YAML block map (lists and small maps in flow style).
class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}

  template <typename T>
  void operator()(const char* key, const T& value) {
    out_ << YAML::Key << key << YAML::Value;
    write(value);
  }
  template <typename E>
  void choice(const char* key, const E& value, const Names<E>& names) {
    for (const auto& [v, name] : names) {
      if (v == value) return void(out_ << YAML::Key << key << YAML::Value << std::string(name));
    }
    DAEDALUS_FAIL("to_yaml: {} holds a value with no name", key);
  }
  template <typename Fn>
  void map(const char* key, Fn&& fn) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    fn(*this);
    out_ << YAML::EndMap;
  }
  void accumulator(const char* key, const fp8::Accumulator& a) {
    out_ << YAML::Key << key << YAML::Value;
    if (a.mantissa_bits == 0) return void(out_ << "exact");
    out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "mantissa_bits" << YAML::Value << a.mantissa_bits << YAML::Key
         << "promote_every" << YAML::Value << a.promote_every << YAML::Key << "chunk" << YAML::Value << a.chunk
         << YAML::EndMap;
  }
  void rope_scaling(const char* key, const std::optional<model::RopeScaling>& value) {
    out_ << YAML::Key << key << YAML::Value;
    if (!value) return void(out_ << YAML::Null);
    out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "type" << YAML::Value << "yarn";
    visit_rope_scaling(*this, *value);
    out_ << YAML::EndMap;
  }
  void overrides(const char* key, const std::vector<fp8::RecipeOverride>& list) {
    out_ << YAML::Key << key << YAML::Value << (list.empty() ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const fp8::RecipeOverride& o : list) {
      out_ << YAML::Flow << YAML::BeginMap << YAML::Key << "match" << YAML::Value << o.match << YAML::Key << "recipe"
           << YAML::Value << std::string(fp8::recipe_name(o.recipe)) << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }

 private:
  template <typename T>
  requires std::is_integral_v<T>
  void write(T v) { out_ << v; }
  void write(double v) { out_ << yaml_double(v); }
  void write(const std::string& v) { out_ << v; }  // the emitter quotes what would not read back as this string
  template <typename T>
  void write(const std::optional<T>& v) {
    if (v) return write(*v);
    out_ << YAML::Null;
  }
  void write(const std::vector<std::string>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (const std::string& s : v) out_ << s;
    out_ << YAML::EndSeq;
  }
  void write(const std::vector<int64_t>& v) {
    out_ << YAML::Flow << YAML::BeginSeq;
    for (int64_t x : v) out_ << x;
    out_ << YAML::EndSeq;
  }
  void write(const std::array<double, 2>& v) {
    out_ << YAML::Flow << YAML::BeginSeq << yaml_double(v[0]) << yaml_double(v[1]) << YAML::EndSeq;
  }

  YAML::Emitter& out_;
};

// Collects every key path ("optimizer.lr", "data.synthetic.vocab", sections too).
class KeyLister {
 public:
  KeyLister(std::string prefix, std::vector<std::string>& out) : prefix_(std::move(prefix)), out_(out) {}
  template <typename T>
  void operator()(const char* key, const T&) {
    add(key);
  }
  template <typename E>
  void choice(const char* key, const E&, const Names<E>&) {
    add(key);
  }
  template <typename Fn>
  void map(const char* key, Fn&& fn) {
    add(key);
    KeyLister sub(prefix_ + key + ".", out_);
    fn(sub);
  }
  void accumulator(const char* key, const fp8::Accumulator&) {
    for (const char* k : {"", ".mantissa_bits", ".promote_every", ".chunk"}) add(std::string(key) + k);
  }
  void overrides(const char* key, const std::vector<fp8::RecipeOverride>&) { add(key); }
  void rope_scaling(const char* key, const std::optional<model::RopeScaling>&) {
    add(key);
    KeyLister sub(prefix_ + key + ".", out_);
    sub.add("type");
    sub.add("rope_type");
    const model::RopeScaling defaults;
    visit_rope_scaling(sub, defaults);
  }

 private:
  void add(const std::string& key) { out_.push_back(prefix_ + key); }
  std::string prefix_;
  std::vector<std::string>& out_;
};

const std::vector<std::string>& known_paths() {
  static const std::vector<std::string> paths = [] {
    std::vector<std::string> out;
    KeyLister lister("", out);
    const RunConfig defaults;
    visit_all(lister, defaults);
    return out;
  }();
  return paths;
}

// Applies "a.b=c" to the tree: the path must name a key (or a section / nested map), the value is
// parsed as YAML; maps on the way are created, replacing a scalar that stood there.
void apply_set(YAML::Node& root, const std::string& entry, Origin& origin) {
  const size_t eq = entry.find('=');
  DAEDALUS_CHECK(eq != std::string::npos && eq > 0, "--set {}: expected KEY=VALUE, e.g. optimizer.lr=1e-3", entry);
  const std::string path = entry.substr(0, eq);
  const auto& known = known_paths();
  DAEDALUS_CHECK(std::find(known.begin(), known.end(), path) != known.end(), "--set {}: unknown key {}{}", entry, path,
                 suggestion(path, known));
  YAML::Node value;
  try {
    value = YAML::Load(entry.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    DAEDALUS_FAIL("--set {}: malformed YAML value: {}", entry, e.msg);
  }
  YAML::Node node = root;
  size_t start = 0;
  for (size_t dot = path.find('.'); dot != std::string::npos; start = dot + 1, dot = path.find('.', start)) {
    const std::string part = path.substr(start, dot - start);
    if (!node[part].IsMap()) node[part] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = node[part];
    node.reset(next);
  }
  node[path.substr(start)] = value;
  origin.sets[path] = entry;
}

#endif  // !DAEDALUS_MINIMAL

}  // namespace

std::string_view backend_name(Backend backend) {
  for (const auto& [value, name] : kBackends)
    if (value == backend) return name;
  return "?";
}

// ---- loading and writing ------------------------------------------------------------------------

#if !DAEDALUS_MINIMAL

namespace {

// Where each document of a YAML stream starts: the mark of its root node (as YAML::Node::Mark()).
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark&) override { root_ = true; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override { node(mark); }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnMapEnd() override {}

 private:
  void node(const YAML::Mark& mark) {
    if (root_) marks.push_back(mark);
    root_ = false;
  }
  bool root_ = false;
};

// A config is one YAML document: refuses a second one, naming its line. Not YAML::LoadAll, which
// yaml-cpp 0.7 (Debian 12) loops on forever for some malformed text, e.g. "," (jbeder/yaml-cpp#1040,
// found by scripts/fuzz): the documents are counted with the parser, stopping at the second, and a
// "document" that starts where the previous one did is the parser stuck on malformed input.
void check_one_document(const std::string& yaml_text, const std::string& source) {
  std::istringstream in(yaml_text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  for (int i = 0; i < 2 && parser.HandleNextDocument(starts); ++i) {
  }
  const std::vector<YAML::Mark>& m = starts.marks;
  if (m.size() < 2) return;
  if (m[1].pos == m[0].pos)
    DAEDALUS_FAIL("{}:{}:{}: malformed YAML: the parser cannot read past this point", source, m[1].line + 1,
                  m[1].column + 1);
  DAEDALUS_FAIL("{}: 2 YAML documents (separated by --- or ...): a config is one document; the second starts at line {}",
                source, m[1].line + 1);
}

}  // namespace

RunConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& sets, const std::string& source) {
  YAML::Node root;
  try {
    check_one_document(yaml_text, source);
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    DAEDALUS_FAIL("{}:{}:{}: malformed YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  DAEDALUS_CHECK(root.IsNull() || root.IsMap(), "{}: expected a map of sections (run:, model:, ...), got {}", source,
                 describe(root));
  if (root.IsNull()) root.reset(YAML::Node(YAML::NodeType::Map));
  Origin origin{source, {}};
  for (const std::string& entry : sets) apply_set(root, entry, origin);

  RunConfig config;
  Reader reader(root, "", origin);
  visit_all(reader, config);
  reader.finish();
  if (config.run.dir.empty()) config.run.dir = "runs/" + config.run.name;
  try {
    config.validate();
  } catch (const InputError& e) {
    // "<key>: <what>": blame the --set that wrote the key (or a section above it), else the file.
    const std::string m = e.what();
    const std::string key = m.substr(0, m.find(':'));
    for (size_t end = key.size(); end != std::string::npos && end > 0; end = key.find_last_of(".[", end - 1)) {
      const auto it = origin.sets.find(key.substr(0, end));
      if (it != origin.sets.end()) throw InputError(fmt::format("--set {}: {}", it->second, m));
    }
    throw InputError(fmt::format("{}: {}", source, m));
  }
  return config;
}

std::string to_yaml(const RunConfig& config) {
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  out << YAML::BeginMap;
  Writer writer(out);
  visit_all(writer, config);
  out << YAML::EndMap;
  DAEDALUS_CHECK(out.good(), "to_yaml: {}", out.GetLastError());
  // A blank line between sections.
  std::string text;
  std::istringstream lines(out.c_str());
  for (std::string line; std::getline(lines, line);) {
    if (!text.empty() && !line.empty() && line[0] != ' ') text += '\n';
    text += line + '\n';
  }
  return "# Daedalus run config, fully resolved (every key; docs/config.md)\n" + text;
}

#else

RunConfig parse_config(const std::string&, const std::vector<std::string>&, const std::string& source) {
  DAEDALUS_FAIL("{}: reading a config needs yaml-cpp; this build is DAEDALUS_MINIMAL", source);
}

std::string to_yaml(const RunConfig&) { DAEDALUS_FAIL("to_yaml needs yaml-cpp; this build is DAEDALUS_MINIMAL"); }

#endif  // !DAEDALUS_MINIMAL

RunConfig load_config(const std::string& path, const std::vector<std::string>& sets) {
  struct stat st {};  // a pipe or device would block in open() or never end
  DAEDALUS_CHECK(::stat(path.c_str(), &st) == 0, "{}: cannot read the config file ({})", path, std::strerror(errno));
  DAEDALUS_CHECK(S_ISREG(st.st_mode),
                 "{}: not a regular file (a directory, pipe or device?): --config wants a YAML file", path);
  std::ifstream in(path);
  DAEDALUS_CHECK(in, "{}: cannot read the config file ({})", path, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), sets, path);
}

}  // namespace daedalus::train
