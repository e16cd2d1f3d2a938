// One kernel body, compiled three times and chosen at run time (shared by CTensorIOKernels and CKernels).
//
//   WM_VARIANTS(name, (params), wide body, narrow body)  defines name_avx512 (wide body: 32 vector
//       registers), name_avx2 and name_portable (narrow body: 16 registers or fewer);
//   WM_DISPATCH(level, name, (args))                      calls the variant for a code path
//       (2 = AVX-512, 1 = AVX2+FMA, 0 = portable; see weightmark_vector_level) and returns.
#ifndef WEIGHTMARK_DISPATCH_H
#define WEIGHTMARK_DISPATCH_H

#if defined(__x86_64__)
#define WM_VARIANTS(NAME, PARAMS, WIDE, NARROW)                                                   \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) static void NAME##_avx512 PARAMS { WIDE } \
    __attribute__((target("avx2,fma"))) static void NAME##_avx2 PARAMS { NARROW }                   \
    static void NAME##_portable PARAMS { NARROW }
#define WM_DISPATCH(LEVEL, NAME, ARGS)                          \
    do {                                                        \
        if ((LEVEL) >= 2) { NAME##_avx512 ARGS; return; }       \
        if ((LEVEL) == 1) { NAME##_avx2 ARGS; return; }         \
        NAME##_portable ARGS;                                   \
    } while (0)
#else
#define WM_VARIANTS(NAME, PARAMS, WIDE, NARROW) static void NAME##_portable PARAMS { NARROW }
#define WM_DISPATCH(LEVEL, NAME, ARGS) do { (void)(LEVEL); NAME##_portable ARGS; } while (0)
#endif

#endif
