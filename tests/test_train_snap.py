"""Weights on the int8 grid (hil.train.snap): after snapping, TensorFlow Lite's int8 conversion holds exactly the
float model's weights (batch normalization folded), which it does not before."""

import numpy as np
import pytest

pytestmark = [pytest.mark.tf, pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")]


def _model(seed: int):
    """Conv2D + BN, DepthwiseConv2D (multiplier 2) + BN, Conv2D without BN, Dense: every kernel a distinct shape."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 3, use_bias=False, name="c0")(x)
    x = keras.layers.BatchNormalization(name="c0_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(7, 1, name="pw")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    for bn in ("c0_bn", "dw_bn"):  # non-trivial folding factors, one of them negative
        layer = model.get_layer(bn)
        n = layer.gamma.shape[0]
        gamma = rng.uniform(0.3, 2.0, n)
        gamma[0] = -gamma[0]
        layer.set_weights([gamma, rng.normal(0, 0.2, n), rng.normal(0, 0.3, n), rng.uniform(0.2, 3.0, n)])
    return model


def _folded(model) -> dict[tuple[int, ...], np.ndarray]:
    """Each kernel folded with its batch normalization, in TFLite's layout, keyed by that shape."""
    out = {}
    for name, bn in (("c0", "c0_bn"), ("dw", "dw_bn"), ("pw", None), ("fc", None)):
        k = model.get_layer(name).kernel.numpy().astype(np.float64)
        if name == "dw":
            k = k.reshape(3, 3, -1)
        factor = 1.0
        if bn is not None:
            b = model.get_layer(bn)
            factor = b.gamma.numpy() / np.sqrt(b.moving_variance.numpy() + b.epsilon)
        k = k * factor
        tfl = k.T if name == "fc" else k[None] if name == "dw" else k.transpose(3, 0, 1, 2)
        out[tfl.shape] = tfl
    return out


def _int8_weights(model) -> dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]:
    from hil.model.synthetic import convert_keras_int8
    from hil.model.tflite_reader import read_tflite

    rng = np.random.default_rng(1)

    def representative():
        for _ in range(16):
            yield [rng.uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)]

    graph = read_tflite(convert_keras_int8(model, representative))
    return {t.shape: (t.data.astype(np.float64), np.asarray(t.quant.scales, np.float64))
            for t in graph.tensors if t.dtype == "int8" and t.is_const and t.quant is not None and t.quant.per_channel}


def _error_in_steps(model) -> dict[tuple[int, ...], float]:
    """Largest |int8 weight * scale - folded float weight| per kernel, in units of that channel's scale."""
    folded, int8 = _folded(model), _int8_weights(model)
    assert set(int8) == set(folded)  # every kernel found, per channel
    errors = {}
    for shape, (q, scales) in int8.items():
        axis = 3 if len(shape) == 4 and shape[0] == 1 else 0  # depthwise: channels last; others: first
        s = scales.reshape([-1 if i == axis else 1 for i in range(len(shape))])
        errors[shape] = float(np.max(np.abs(q * s - folded[shape]) / s))
    return errors


def test_after_snapping_the_int8_conversion_holds_the_float_weights():
    from hil.train.snap import snap_model_to_int8_grid

    model = _model(0)
    x = np.random.default_rng(2).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    before_out = model.predict(x, verbose=0)
    before = _error_in_steps(model)
    assert max(before.values()) > 0.3  # ordinary float weights sit anywhere between two int8 steps

    rows = snap_model_to_int8_grid(model)
    assert [(r.name, r.folded_with) for r in rows] == [("c0", "c0_bn"), ("dw", "dw_bn"), ("pw", None), ("fc", None)]
    assert [r.channels for r in rows] == [5, 10, 7, 4]
    assert all(0 < r.mean_change_steps <= r.max_change_steps <= 0.5 for r in rows)
    after = _error_in_steps(model)
    assert max(after.values()) < 1e-4, after
    # The float model moved, but only by weight rounding.
    assert not np.array_equal(model.predict(x, verbose=0), before_out)
    np.testing.assert_allclose(model.predict(x, verbose=0), before_out, atol=0.05 * np.abs(before_out).max())


def test_snapping_twice_changes_nothing():
    from hil.train.snap import snap_model_to_int8_grid

    model = _model(3)
    snap_model_to_int8_grid(model)
    kernels = [w.numpy().copy() for w in model.weights]
    rows = snap_model_to_int8_grid(model)
    assert max(r.max_change_steps for r in rows) < 1e-4
    for a, b in zip(kernels, model.weights, strict=True):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-6, atol=0)


def test_snap_per_channel_keeps_an_all_zero_channel():
    from hil.train.snap import snap_per_channel

    w = np.array([[0.0, 1.0], [0.0, -0.26], [0.0, 0.5]])
    snapped, scale = snap_per_channel(w)
    assert scale.tolist() == [0.0, pytest.approx(1 / 127)]
    assert snapped[:, 0].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(snapped[:, 1], np.round(w[:, 1] * 127) / 127)
