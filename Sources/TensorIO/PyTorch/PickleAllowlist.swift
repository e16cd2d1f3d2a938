/// The globals a PyTorch state dict may name, and what WeightMark does with each. Everything else is refused
/// at the GLOBAL opcode, before any value is built, with the global's name in the error.
///
/// The list matches what `torch.save` emits for `model.state_dict()` and for dicts such as
/// `{"model": state_dict, "epoch": 3}`; it is narrower than torch's own `weights_only` allowlist.
enum PickleAllowlist {
    enum Role: Equatable {
        /// `collections.OrderedDict(...)`: a new dict.
        case orderedDict
        /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`: a tensor view of a storage.
        case rebuildTensor
        /// `torch._utils._rebuild_parameter(_with_state)`: the wrapped tensor.
        case rebuildParameter
        /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: `func(*args)` for plain tensor types.
        case rebuildFromType
        /// `_codecs.encode(str, "latin1")`: how protocol 2 spells `bytes`.
        case encodeBytes
        /// `torch.Size(tuple)`: the tuple.
        case size
        /// `torch.device(...)`: its first argument.
        case device
        /// Inert values: storage classes, tensor classes, dtypes.
        case inert
    }

    static let tensorTypes: Set<String> = ["torch._tensor.Tensor", "torch.Tensor", "torch.nn.parameter.Parameter"]

    static let dtypes: Set<String> = [
        "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long", "int32", "int",
        "int16", "short", "int8", "uint8", "bool",
    ]

    /// The storage classes `torch.save` names, with the safetensors dtype of their elements.
    static let storageDTypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8, "ByteStorage": .u8,
        "BoolStorage": .bool, "Float8_e4m3fnStorage": .f8E4M3, "Float8_e5m2Storage": .f8E5M2,
    ]

    static func role(module: String, name: String) -> Role? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameter
        case ("torch._tensor", "_rebuild_from_type_v2"): return .rebuildFromType
        case ("_codecs", "encode"): return .encodeBytes
        case ("torch", "Size"): return .size
        case ("torch", "device"): return .device
        case ("torch._tensor", "Tensor"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"): return .inert
        case ("torch", _) where storageDTypes[name] != nil || dtypes.contains(name): return .inert
        default: return nil
        }
    }
}
