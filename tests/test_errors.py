"""Every bad argument or input gets an exception that names the argument, what was expected,
what arrived and (for per-sample data) the sample index; never a crash."""
from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def

import dali_multimix
from conftest import run_multimix

IMAGES = np.zeros((3, 8, 8, 3), np.uint8)
LABELS = [np.array(i, np.int32) for i in range(3)]


def build_graph(**kwargs):
    """Builds (only) the graph, for errors known at graph-build time."""
    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(name="x", layout="HWC")
        y = fn.external_source(name="y")
        return tuple(dali_multimix.multimix(x, y, **kwargs))
    pipe()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, r"`k` must be an integer from 1 to 64; got 0"),
    (dict(k=65), ValueError, r"`k` must be an integer from 1 to 64; got 65"),
    (dict(k=2.5), ValueError, r"`k` must be an integer .* got 2.5"),
    (dict(k=True), ValueError, r"`k` must be an integer"),
    (dict(alpha=0.0), ValueError, r"`alpha` must be a finite number > 0; got 0.0"),
    (dict(alpha=-1), ValueError, r"`alpha` must be a finite number > 0; got -1"),
    (dict(alpha=float("nan")), ValueError, r"`alpha` must be a finite number > 0; got nan"),
    (dict(mode="mixupp"), ValueError, r"`mode` must be one of .*'mixup'.* got 'mixupp'"),
    (dict(lambda_sampling="qmc"), ValueError, r"`lambda_sampling` must be one of .* got 'qmc'"),
    (dict(lambda_scope="pixel"), ValueError,
     r"`lambda_scope` must be one of \('batch', 'sample'\); got 'pixel'"),
    (dict(lambda_scope=None), ValueError, r"`lambda_scope` must be one of .* got None"),
    (dict(k=3, lambdas=[0.1, 0.2]), ValueError, r"`lambdas` must hold k=3 values; got 2"),
    (dict(k=2, lambdas=[0.1, 1.5]), ValueError, r"`lambdas` must lie in \[0, 1\]; value 1 is 1.5"),
    (dict(k=2, lambdas=[0.6, 0.2]), ValueError, r"`lambdas` must be non-decreasing"),
    (dict(partners=-1), ValueError, r"`partners` must be a DataNode or an index >= 0; got -1"),
    (dict(centers=[1, 2]), ValueError, r"`centers` applies to mode 'cutmix' only"),
    (dict(mode="cutmix", centers=[1]), ValueError, r"`centers` must be .* \(y, x\).* got \[1\]"),
    (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0 or None; got -1"),
])
def test_graph_build_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_graph(**kwargs)


def test_images_must_be_a_data_node():
    with pytest.raises(TypeError, match=r"`images` must be a DALI DataNode.*got ndarray"):
        dali_multimix.multimix(IMAGES, IMAGES)


def test_operator_rejects_a_bad_lambda_scope():
    """fn.multimix called directly (past the wrapper's check): the operator names the argument,
    what it expects and what it got, and the pipeline fails to build with a ValueError."""
    dali_multimix.load_plugin()  # fn.multimix exists once the plugin is loaded
    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(name="x", layout="HWC")
        y = fn.external_source(name="y")
        return tuple(fn.multimix(x, y, lambda_scope="Batch"))

    p = pipe()
    with pytest.raises(ValueError, match=r'multimix: argument `lambda_scope`: expected "batch" or '
                                         r'"sample"; got "Batch"'):
        p.build()


def test_fmix_scores_must_be_a_data_node():
    with pytest.raises(TypeError, match=r"`fmix_scores` must be a CPU DataNode"):
        build_graph(mode="fmix", fmix_scores=np.zeros((8, 8)))


def run_error(images, labels=LABELS, layout="HWC", arg_inputs=None, **kwargs):
    with pytest.raises(ValueError) as info:  # DALI raises std::invalid_argument as ValueError
        run_multimix(images, labels, layout=layout, arg_inputs=arg_inputs, **kwargs)
    return str(info.value)


def test_samples_of_different_shapes():
    images = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8),
              np.zeros((8, 9, 3), np.uint8)]
    msg = run_error(images)
    assert "input `images`: all samples of a batch must have the same shape" in msg
    assert "sample 0 has shape (8, 8, 3) but sample 2 has shape (8, 9, 3)" in msg


def test_unsupported_dtype():
    msg = run_error(IMAGES.astype(np.int16))
    assert "input `images`: expected dtype uint8, float16 or float32; got int16" in msg


@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
def test_spatial_modes_need_h_and_w(mode):
    msg = run_error(IMAGES.reshape(3, 64, 3), layout="XYZ"[:2], mode=mode)
    assert f'mode "{mode}" needs a layout with adjacent H and W' in msg
    assert 'got layout "XY"' in msg
    msg = run_error(IMAGES, layout="", mode=mode)
    assert 'got layout ""' in msg


def test_labels_batch_must_match():
    """DALI itself rejects inputs of different batch sizes before the operator runs (the
    operator checks again, for graphs that could bypass that)."""
    with pytest.raises(RuntimeError, match=r"batch size 2 which is different than 3"):
        run_multimix(IMAGES, LABELS[:2])


def test_labels_of_different_shapes():
    labels = [np.zeros(10, np.float32), np.zeros(10, np.float32), np.zeros(9, np.float32)]
    msg = run_error(IMAGES, labels=labels)
    assert "input `labels`: all labels of a batch must have the same shape" in msg
    assert "sample 2 has shape (9,)" in msg


def test_lambdas_out_of_range():
    lambdas = np.array([[0.1, 0.2], [0.1, 0.2], [0.3, 1.25]], np.float32)
    msg = run_error(IMAGES, k=2, arg_inputs={"lambdas": lambdas})
    assert "argument `lambdas` of sample 2: expected values in [0, 1]; value 1 is 1.25" in msg


def test_lambdas_of_wrong_length():
    lambdas = [np.full(3, 0.5, np.float32), np.full(2, 0.5, np.float32), np.full(3, 0.5, np.float32)]
    msg = run_error(IMAGES, k=3, arg_inputs={"lambdas": lambdas})
    assert "argument `lambdas` of sample 1: expected k=3 values; got 2" in msg


def test_lambdas_unsorted():
    lambdas = np.array([[0.1, 0.2], [0.5, 0.2], [0.3, 0.4]], np.float32)
    msg = run_error(IMAGES, k=2, arg_inputs={"lambdas": lambdas})
    assert "argument `lambdas` of sample 1: expected non-decreasing values" in msg


@pytest.mark.parametrize("value, word", [(1e-50, "underflows"), (1e300, "overflows")])
def test_float64_lambdas_that_float32_cannot_hold_are_named(value, word):
    """A float64 override is not converted silently: 1e-50 would become 0 (a valid ratio) and
    1e300 inf; the message names the value passed, not the converted one."""
    lambdas = np.array([[0.1, 0.2], [value, 0.5], [0.3, 0.4]], np.float64)
    msg = run_error(IMAGES, k=2, arg_inputs={"lambdas": lambdas})
    assert f"argument `lambdas` of sample 1: value 0 ({value:g}) {word} float32" in msg


def test_float64_lambdas_within_float32_are_used():
    lambdas = np.array([[0.1, 0.2], [0.25, 0.5], [0.0, 1.0]], np.float64)
    weights = run_multimix(IMAGES, LABELS, layout="HWC", k=2, arg_inputs={"lambdas": lambdas})[0][1]
    np.testing.assert_array_equal(weights, lambdas.astype(np.float32))


def test_lambdas_of_wrong_dtype():
    msg = run_error(IMAGES, k=2, arg_inputs={"lambdas": np.full((3, 2), 1, np.int32)})
    assert "argument `lambdas`: expected dtype float32 or float64; got int32" in msg


def test_partners_of_wrong_dtype():
    msg = run_error(IMAGES, arg_inputs={"partners": np.zeros(3, np.float32)})
    assert "argument `partners`: expected dtype int32 or int64; got float" in msg


def test_partners_of_wrong_length():
    msg = run_error(IMAGES, arg_inputs={"partners": [np.array([0]), np.array([1, 2]), np.array([0])]})
    assert "argument `partners` of sample 1: expected one index; got 2 values" in msg


def test_partner_out_of_range():
    partners = np.array([0, 3, 1], np.int32)
    msg = run_error(IMAGES, arg_inputs={"partners": partners})
    assert "argument `partners` of sample 1: expected an index in [0, 3) (the batch size); got 3" in msg


def test_constant_partner_out_of_range():
    msg = run_error(IMAGES, partners=7)
    assert "argument `partners` of sample 0: expected an index in [0, 3)" in msg and "got 7" in msg


def test_center_out_of_range():
    centers = np.array([[0, 0], [8, 1], [1, 1]], np.int32)
    msg = run_error(IMAGES, mode="cutmix", arg_inputs={"centers": centers})
    assert "argument `centers` of sample 1: expected y in [0, 8) and x in [0, 8); got (8, 1)" in msg


def test_fmix_scores_of_wrong_shape():
    scores = np.zeros((3, 8, 7), np.float32)
    msg = run_error(IMAGES, mode="fmix", arg_inputs={"fmix_scores": scores})
    assert "argument `fmix_scores` of sample 0: expected shape (8, 8) (H, W of the images); got (8, 7)" in msg


def test_fmix_scores_not_finite():
    scores = np.zeros((3, 8, 8), np.float32)
    scores[2, 1, 1] = np.nan
    msg = run_error(IMAGES, mode="fmix", arg_inputs={"fmix_scores": scores})
    assert "argument `fmix_scores` of sample 2: expected finite values; element 9 is nan" in msg


def test_pipeline_survives_an_error():
    """After a run-time error the process goes on: a fresh pipeline still works."""
    run_error(IMAGES.astype(np.int16))
    [(mixed, _, _, _)] = run_multimix(IMAGES, LABELS, k=2)
    assert mixed.shape == (3, 2, 8, 8, 3)


# No value silently converted on its way into the operator (int32 / float32 / int64 storage):
# each is an error naming the argument and the value passed.
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(partners=2**31), ValueError, r"`partners` is stored as int32: .* at most 2147483647; got 2147483648"),
    (dict(partners=2**32 + 1), ValueError, r"`partners` is stored as int32: .* got 4294967297"),
    (dict(mode="cutmix", centers=[2**31, 0]), ValueError,
     r"`centers` is stored as int32: .* got \[2147483648, 0\]"),
    (dict(alpha=1e39), ValueError, r"`alpha` is stored as float32, which 1e\+39 overflows"),
    (dict(alpha=1e-45), ValueError, r"`alpha` is stored as float32, which 1e-45 underflows"),
    (dict(k=2, lambdas=[1e-50, 0.5]), ValueError, r"`lambdas` is stored as float32, which 1e-50 underflows"),
    (dict(k=2, lambdas=["0.1", 0.5]), TypeError, r"`lambdas` must be a number; got '0.1' \(str\)"),
    (dict(k=2, lambdas=[True, True]), TypeError, r"`lambdas` must be a number; got True"),
    (dict(k=2, lambdas="ab"), TypeError, r"`lambdas` must be a DataNode or a sequence of 2 floats; got str"),
    (dict(seed=2**64), ValueError, r"`seed` is stored as int64: .* got 18446744073709551616"),
])
def test_values_beyond_the_operators_types_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_graph(**kwargs)
