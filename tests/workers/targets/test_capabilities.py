"""What each target can run, and the reason a load failure gives (no runtime started)."""

from __future__ import annotations

from workers.targets import capabilities, runner


def test_signed_int8_weights_for_a_conv_model_are_steered_to_unsigned_ones_on_wasm() -> None:
    """(E1) Dynamic INT8 with signed weights on a model with Conv is refused for browser-wasm with
    the fix in words (QUInt8), and allowed with unsigned weights, on node and on the CPU."""
    conv = {"Conv", "Relu"}
    problem = capabilities.recipe_problem("browser-wasm", "quantize_dynamic", {"weight_type": "QInt8"}, conv)
    assert problem is not None and "QUInt8" in problem
    assert capabilities.recipe_problem("browser-wasm", "quantize_dynamic", {"weight_type": "QUInt8"}, conv) is None
    assert capabilities.recipe_problem("node", "quantize_dynamic", {"weight_type": "QInt8"}, conv) is None
    assert capabilities.recipe_problem("browser-wasm", "quantize_dynamic", {"weight_type": "QInt8"}, {"MatMul"}) is None


def test_ops_a_target_lacks_are_named_with_their_domain() -> None:
    """(E1) NCHWc layout ops are missing on wasm only; Rfft (CUDA-only) on every CPU build; plain
    ops and other contrib ops are not reported."""
    nodes = [("com.microsoft.nchwc", "Conv"), ("", "Flatten"), ("com.microsoft", "FusedGemm"), ("com.microsoft", "Rfft")]
    assert capabilities.lacking_ops("browser-wasm", nodes) == ["com.microsoft.nchwc:Conv", "com.microsoft:Rfft"]
    assert capabilities.lacking_ops("node", nodes) == ["com.microsoft:Rfft"]
    assert capabilities.PROVIDER_OF_TARGET["browser-wasm"] != capabilities.PROVIDER_OF_TARGET["node"]


def test_a_load_failure_names_the_op_the_runtime_has_no_kernel_for() -> None:
    """(E1) onnxruntime's two wordings of a missing op (no implementation for a node; an op whose
    domain is not registered) become a reason that names the op and the target."""
    missing = runner.load_problem(
        "browser-wasm", "Could not find an implementation for ConvInteger(10) node with name 'conv_quant'")
    assert "no kernel for ConvInteger (node 'conv_quant', opset 10)" in missing
    assert "onnxruntime-web (wasm)" in missing and "browser-wasm target" in missing
    unregistered = runner.load_problem(
        "browser-wasm", "Fatal error: com.microsoft.nchwc:Conv(-1) is not a registered function/op")
    assert "no kernel for Conv (domain com.microsoft.nchwc)" in unregistered
    assert runner.load_problem("node", "file is truncated").endswith(": file is truncated")
