// DAEDALUS_CPU_CLONES: compile a hot CPU loop for x86-64-v4 (AVX-512 with 512-bit vectors; GCC tunes
// plain `avx512f` for 256-bit ones), AVX2 and the x86-64 baseline, and pick the clone when the
// program loads (GCC function multi-versioning). Only for loops whose every operation is correctly
// rounded per lane or exact, in files compiled without FMA contraction where they add and multiply:
// then each clone gives the baseline's bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DAEDALUS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DAEDALUS_CPU_CLONES
#endif
