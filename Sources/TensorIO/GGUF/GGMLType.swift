/// ggml tensor types (GGUF `ggml_type` ids) and their block layouts.
public enum GGMLType: UInt32, Sendable, CaseIterable, Codable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20, iq3_S = 21, iq2_S = 22, iq4_XS = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_M = 29, bf16 = 30
    /// Row-interleaved Q4_0 / IQ4_NL for ARM, written by llama.cpp in 2024 and since removed from GGUF files
    /// (llama.cpp repacks at load time now). Their sizes are known, their layout is not decoded here: such
    /// tensors are reported as skipped.
    case q4_0_4_4 = 31, q4_0_4_8 = 32, q4_0_8_8 = 33, iq4_NL_4_4 = 36, iq4_NL_4_8 = 37, iq4_NL_8_8 = 38
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41, q2_0 = 42

    /// Name as llama.cpp prints it.
    public var name: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .f64: "F64"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        default: String(describing: self).uppercased()
        }
    }

    /// Elements per block and bytes per block.
    public var blockLayout: (elements: Int, bytes: Int) {
        switch self {
        case .f32, .i32: (1, 4)
        case .f16, .bf16, .i16: (1, 2)
        case .f64, .i64: (1, 8)
        case .i8: (1, 1)
        case .q4_0, .q4_0_4_4, .q4_0_4_8, .q4_0_8_8, .iq4_NL_4_4, .iq4_NL_4_8, .iq4_NL_8_8: (32, 18)
        case .q4_1: (32, 20)
        case .q5_0: (32, 22)
        case .q5_1: (32, 24)
        case .q8_0: (32, 34)
        case .q8_1: (32, 36)
        case .q2_K: (256, 84)
        case .q3_K: (256, 110)
        case .q4_K: (256, 144)
        case .q5_K: (256, 176)
        case .q6_K: (256, 210)
        case .q8_K: (256, 292)
        case .iq2_XXS: (256, 66)
        case .iq2_XS: (256, 74)
        case .iq3_XXS: (256, 98)
        case .iq1_S: (256, 50)
        case .iq4_NL: (32, 18)
        case .iq3_S: (256, 110)
        case .iq2_S: (256, 82)
        case .iq4_XS: (256, 136)
        case .iq1_M: (256, 56)
        case .tq1_0: (256, 54)
        case .tq2_0: (256, 66)
        case .mxfp4: (32, 17)
        case .nvfp4: (64, 36)
        case .q1_0: (128, 18)
        case .q2_0: (64, 18)
        }
    }
}

