"""Metrics: torch-fidelity maths on known cases, Inception plumbing with random weights (agreeing with
torch_fidelity.calculate_metrics), offline weights handling, the real-stats cache, the label classifier."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from labelwise.errors import LabelwiseError
from labelwise.images import read_images, write_images
from labelwise.metrics import inception as inc
from labelwise.metrics import stats as S
from labelwise.metrics.classifier import ClassifierSpace, train_classifier
from labelwise.metrics.evaluate import evaluate_model, open_spaces, write_metrics
from labelwise.metrics.realstats import load_real_stats, real_stats, stats_path


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and one BLAS thread: on a shared 2-core machine, oversubscribed OpenMP/OpenBLAS
    threads spin against each other and made the Inception test 4x slower than a single thread."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- maths


def test_frechet_distance_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = S.frechet_distance({"mu": mu1, "sigma": np.diag(s1)}, {"mu": mu2, "sigma": np.diag(s2)})
    assert got == pytest.approx(expected, rel=1e-9)
    assert S.frechet_distance({"mu": mu1, "sigma": np.diag(s1)}, {"mu": mu1, "sigma": np.diag(s1)}) == pytest.approx(
        0, abs=1e-9
    )


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    g = S.gaussian_stats(x)
    assert g["mu"].dtype == np.float64 and g["sigma"].shape == (4, 4)
    np.testing.assert_allclose(g["mu"], x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(g["sigma"], np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)


def test_inception_score_uniform_and_one_hot():
    k = 5
    one_hot = torch.eye(k).repeat(8, 1) * 100.0  # confident and evenly spread over k classes: IS = k
    assert S.inception_score(one_hot, splits=1)["mean"] == pytest.approx(k, rel=1e-6)
    uniform = S.inception_score(np.zeros((40, k)), splits=10)  # no confidence: IS = 1
    assert uniform["mean"] == pytest.approx(1.0) and uniform["std"] == pytest.approx(0.0, abs=1e-12)
    assert S.inception_score(np.zeros((3, k)), splits=10)["splits"] == 3  # capped at n: no empty split (NaN)


def test_kid_subset_size_capped_at_n():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 8)), rng.normal(3, 1, size=(9, 8))
    out = S.kernel_distance(a, b, subset_size=1000, subsets=20)
    assert out["subset_size"] == 7 and out["mean"] > 0
    assert abs(S.kernel_distance(a, a, subsets=20)["mean"]) < out["mean"] / 10


def test_precision_recall_is_torch_fidelitys_and_sees_collapse():
    """Equal set sizes: exactly torch-fidelity's prc_features_to_metric; a collapsed generator (one
    image, repeated) keeps its precision and loses its recall; unequal sizes are cut to the smaller n."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(6)
    real = rng.normal(size=(60, 8)).astype(np.float32)
    varied = rng.normal(0.3, 1.0, size=(60, 8)).astype(np.float32)
    ref = prc_features_to_metric(torch.from_numpy(varied), torch.from_numpy(real), prc_neighborhood=3, verbose=False)
    got = S.precision_recall(real, varied, k=3)
    assert (got["precision"], got["recall"]) == (ref["precision"], ref["recall"]) and got["n"] == 60
    assert 0.3 < got["recall"] < 1.0  # not a degenerate case
    collapsed = S.precision_recall(real, np.repeat(real[:1] + 0.01, 60, axis=0), k=3)
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05
    uneven = S.precision_recall(real, varied[:20], k=5)
    assert uneven["n"] == 20 and uneven["k"] == 5 and uneven == S.precision_recall(real, varied[:20], k=5)
    assert S.precision_recall(real, varied[:3], k=3) == {"precision": None, "recall": None, "k": 3, "n": 3}


# ---------------------------------------------------------------- Inception weights (never the real ones here)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub / "checkpoints" / inc.HUB_FILENAME


def test_weights_resolution_configured_then_hub_cache(empty_hub, tmp_path):
    assert inc.resolve_inception_weights(None) is None
    assert inc.resolve_inception_weights(str(tmp_path / "w.pth")) == tmp_path / "w.pth"
    empty_hub.parent.mkdir(parents=True)
    empty_hub.write_bytes(b"x")
    assert inc.resolve_inception_weights(None) == empty_hub


def test_required_without_weights_says_where_and_how(empty_hub):
    with pytest.raises(LabelwiseError) as err:
        inc.locate_weights("required", None)
    msg = str(err.value)
    assert str(empty_hub) in msg and "evaluation.inception_weights" in msg
    assert f"wget -O {empty_hub.name} {inc.URL_INCEPTION_V3}" in msg and "\n" not in msg
    with pytest.raises(LabelwiseError, match="/nowhere/w.pth"):
        inc.locate_weights("required", "/nowhere/w.pth")
    with pytest.raises(LabelwiseError, match="evaluation.inception must be one of"):
        inc.locate_weights("sometimes", None)


def test_auto_without_weights_skips_with_reason(empty_hub, make_shard):
    spaces, skipped = open_spaces({"inception": "auto"}, None, "cpu")
    assert spaces == {} and inc.URL_INCEPTION_V3 in skipped["inception"] and str(empty_hub) in skipped["inception"]
    shard = make_shard(label=0, n=4)
    out = evaluate_model("m", {0: shard}, {0: shard}, settings={"inception": "auto"}, device="cpu")
    assert out["inception"]["status"] == "skipped" and "Inception weights not found" in out["inception"]["reason"]
    assert out["classifier"]["status"] == "skipped" and out["protocol"]["inception_weights"] is None
    assert open_spaces({"inception": "off"}, None, "cpu")[1]["inception"] == "evaluation.inception is 'off'"


def test_truncated_weights_file_is_refused(random_inception_weights, tmp_path):
    bad = tmp_path / "truncated.pth"
    with open(random_inception_weights, "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    for mode in ("auto", "required"):  # present but broken is an error whatever the mode
        with pytest.raises(LabelwiseError, match=f"{bad}: not a readable PyTorch weights file.*fetch it again"):
            open_spaces({"inception": mode, "inception_weights": str(bad)}, None, "cpu")


class NotAWeight:  # pickled by reference: loading it would mean running code from the file
    pass


def test_wrong_layout_or_code_in_weights_file_is_refused(tmp_path):
    # Layout-correct but tiny file: zero-stride expanded tensors keep one element of storage each.
    layout = {k: torch.zeros(()).expand(shape) for k, shape in inc.expected_layout().items()}
    layout["fc.weight"] = torch.zeros(()).expand(1000, 2048)  # torchvision's ImageNet head, not the 1008-class one
    del layout["Mixed_7c.branch_pool.conv.weight"]
    wrong = tmp_path / "wrong.pth"
    torch.save(layout, wrong)
    with pytest.raises(LabelwiseError) as err:
        inc.load_weights(wrong)
    msg = str(err.value)
    assert str(wrong) in msg and "1 missing: Mixed_7c.branch_pool.conv.weight" in msg
    assert "fc.weight (1000, 2048) (expected (1008, 2048))" in msg
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(LabelwiseError, match="not torch-fidelity's InceptionV3"):
        inc.load_weights(other)
    code = tmp_path / "code.pth"
    torch.save({"x": NotAWeight()}, code)
    with pytest.raises(LabelwiseError, match="not a readable PyTorch weights file"):
        inc.load_weights(code)


# ---------------------------------------------------------------- Inception end to end (random weights)


def _images(rng, n, channels, size, offset=0):
    base = rng.integers(0, 256, (n, channels, size, size))
    return np.clip(base // 2 + offset, 0, 255).astype(np.uint8)


class _Uint8RGB(torch.utils.data.Dataset):
    """What torch-fidelity takes as input: a Dataset of uint8 3×H×W tensors."""

    def __init__(self, images):
        self.images = torch.from_numpy(images).expand(-1, 3, -1, -1).contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_inception_end_to_end_agrees_with_torch_fidelity(random_inception_weights, tmp_path):
    """One label, 4 real and 4 generated images: Inception runs a few images/s on a CPU and each
    2048-d FID is an eigendecomposition of seconds, so this test keeps to the minimum that checks
    the plumbing (pooling over labels is covered in classifier space, by the same code)."""
    from torch_fidelity import calculate_metrics

    rng = np.random.default_rng(3)
    real = _images(rng, 4, 1, 28)  # MNIST-like: grayscale 28 px
    # Samples padded to 32 px (resized inside the extractor), of varied brightness so that IS is not trivial.
    fake = np.concatenate([_images(rng, 1, 1, 32, offset=o) for o in (0, 60, 120, 180)])
    shard, sample = tmp_path / "real.h5", tmp_path / "fake.h5"
    write_images(shard, real, label=5, class_name="five")
    write_images(sample, fake, label=5)

    settings = {
        "inception": "required",
        "inception_weights": str(random_inception_weights),
        "kid_subsets": 10,
        "is_splits": 1,
    }  # one split of the 4 samples: IS away from its trivial value 1
    spaces = open_spaces(settings, None, "cpu")
    out = evaluate_model("m", {5: sample}, {5: shard}, stats_dir=tmp_path / "stats", settings=settings, spaces=spaces)
    write_metrics(out, tmp_path / "metrics.json", tmp_path / "metrics.csv")

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["inception"]["status"] == "ok" and m["protocol"]["inception_weights"] == str(random_inception_weights)
    assert m["protocol"]["n_real"] == {"5": 4} and m["protocol"]["class_names"] == {"5": "five"}
    assert m["protocol"]["feature_spaces"] == ["inception"] and m["classifier"]["status"] == "skipped"
    fid, kid = m["inception"]["fid"], m["inception"]["kid"]
    assert fid["per_label"]["5"] > 0 and fid["pooled"] == fid["intra_fid"] == fid["per_label"]["5"]
    assert kid["subset_size"] == kid["per_label"]["5"]["subset_size"] == 4  # capped at n
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert rows[0]["label"] == "5" and rows[0]["class_name"] == "five" and rows[0]["label_accuracy"] == ""
    assert float(rows[0]["inception_fid"]) == pytest.approx(fid["per_label"]["5"])

    cache = stats_path(tmp_path / "stats", "inception", 5)
    stats = load_real_stats(cache)
    assert stats.n == 4 and stats.features.shape == (4, 2048) and stats.space == "inception"
    assert stats.identity["weights_sha256"] == inc.file_sha256(random_inception_weights)
    assert stats.shard_sha256 == read_images(shard)[1]["sha256"]
    inception = spaces[0]["inception"]
    monkey = RaisingSpace()
    monkey.name, monkey.identity = inception.name, inception.identity
    assert real_stats(shard, cache, monkey).n == 4  # the cache is reused: no feature extraction

    # The same images through torch-fidelity's own pipeline, given the same weights file.
    ref = calculate_metrics(
        input1=_Uint8RGB(fake),
        input2=_Uint8RGB(real),
        isc=True,
        fid=True,
        kid=True,
        prc=True,
        isc_splits=1,
        kid_subset_size=4,
        kid_subsets=10,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(random_inception_weights),
        cuda=False,
        verbose=False,
        cache=False,
        save_cpu_ram=True,
    )
    assert fid["per_label"]["5"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert m["inception"]["is"]["mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-5)
    assert kid["mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    assert (m["inception"]["precision"]["pooled"], m["inception"]["recall"]["pooled"]) == (
        ref["precision"],
        ref["recall"],
    )
    assert m["protocol"]["prc_k"] == 3 and m["protocol"]["prc_n"] == {"pooled": 4, "per_label": {"5": 4}}
    assert float(rows[0]["inception_recall"]) == m["inception"]["recall"]["per_label"]["5"]
    assert m["inception"]["is"]["mean"] > 1.1  # the random logits vary: the comparison is not trivial


# ---------------------------------------------------------------- real-stats cache


class CountingSpace:
    """A cheap stand-in feature space (per-channel moments) that counts its calls."""

    name = "toy"

    def __init__(self, version=1):
        self.identity = {"extractor": "toy", "version": version}
        self.calls = 0

    def features(self, images):
        self.calls += 1
        x = images.reshape(len(images), -1).astype(np.float32)
        return {"pool": np.stack([x.mean(1), x.std(1), x[:, ::7].mean(1)], 1), "logits": x[:, :3]}


class RaisingSpace(CountingSpace):
    def features(self, images):
        raise AssertionError("recomputed although the cache is valid")


def test_real_stats_cache_written_once_then_reused(make_shard, tmp_path):
    shard = make_shard(label=2, n=12)
    out = stats_path(tmp_path / "stats", "toy", 2)
    first = real_stats(shard, out, CountingSpace())
    assert out.is_file() and first.n == 12 and first.label == 2
    mtime = out.stat().st_mtime_ns
    again = real_stats(shard, out, RaisingSpace())  # same name and identity: read, not recomputed
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_allclose(again.sigma, first.sigma)
    assert out.stat().st_mtime_ns == mtime and again.shard_sha256 == read_images(shard)[1]["sha256"]

    other = CountingSpace(version=2)  # other weights: the cache no longer applies
    real_stats(shard, out, other)
    assert other.calls == 1
    make_shard(label=2, n=12, seed=99)  # the shard changed
    changed = CountingSpace(version=2)
    real_stats(shard, out, changed)
    assert changed.calls == 1

    out.write_bytes(out.read_bytes()[:100])  # a damaged cache is recomputed, and reported when loaded directly
    with pytest.raises(LabelwiseError, match="unreadable real-image statistics"):
        load_real_stats(out)
    assert real_stats(shard, out, CountingSpace(version=2)).n == 12


# ---------------------------------------------------------------- label classifier


def _two_class(rng, n, channels=1, size=28):
    """Class 0: bright left half; class 1: bright right half; noise on top."""
    x = rng.integers(0, 60, (2 * n, channels, size, size))
    x[:n, :, :, : size // 2] += 180
    x[n:, :, :, size // 2 :] += 180
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.fixture
def two_class(tmp_path):
    rng = np.random.default_rng(4)
    x = _two_class(rng, 40)
    shards = {}
    for label in (0, 1):
        shards[label] = tmp_path / "shards" / f"{label}.h5"
        write_images(shards[label], x[label * 40 : (label + 1) * 40], label=label, class_name=["left", "right"][label])
    y = _two_class(rng, 10, size=32)  # "generated": another draw, 32 px
    samples = {label: y[label * 10 : (label + 1) * 10] for label in (0, 1)}
    clf = tmp_path / "classifier.pt"
    info = train_classifier(shards, clf, epochs=15, seed=0, device="cpu", held_out_fraction=0.25)
    return shards, samples, clf, info


def test_classifier_learns_and_label_accuracy_behaves(two_class, tmp_path):
    shards, samples, clf, info = two_class
    assert info["held_out_accuracy"] >= 0.9 and info["n_held_out"] == 20 and info["labels"] == [0, 1]
    assert json.loads(clf.with_suffix(".json").read_text())["held_out_accuracy"] == info["held_out_accuracy"]
    blob = torch.load(clf, weights_only=True)  # plain tensors and plain types only
    assert blob["class_names"] == ["left", "right"] and "state_dict" in blob

    space = ClassifierSpace(clf, device="cpu")
    assert space.label_accuracy(samples[0], 0) >= 0.9 and space.label_accuracy(samples[0], 1) <= 0.1

    def files(name, swap):
        out = {}
        for label in (0, 1):
            out[label] = tmp_path / name / f"{label}.h5"
            write_images(out[label], samples[1 - label if swap else label], label=label)
        return out

    settings = {"inception": "off", "is_splits": 1}  # one split: IS of an even two-class mix is 2
    right = evaluate_model("ok", files("right", False), shards, classifier_path=clf, settings=settings, device="cpu")
    wrong = evaluate_model("swap", files("wrong", True), shards, classifier_path=clf, settings=settings, device="cpu")
    assert right["classifier"]["label_accuracy"]["pooled"] >= 0.9
    assert wrong["classifier"]["label_accuracy"]["pooled"] <= 0.1
    assert right["classifier"]["held_out_accuracy"] == info["held_out_accuracy"]
    assert right["classifier"]["fid"]["intra_fid"] < wrong["classifier"]["fid"]["intra_fid"]
    assert right["classifier"]["is"]["mean"] > 1.8
    assert right["inception"] == {"status": "skipped", "reason": "evaluation.inception is 'off'"}
    assert right["protocol"]["feature_spaces"] == ["classifier"]


def test_precision_recall_in_classifier_features_per_label_and_pooled(two_class, tmp_path):
    """metrics.json's classifier precision and recall are torch-fidelity's function on the classifier
    features of the same images, per label and pooled; a generator repeating one image keeps its
    label accuracy and loses its recall."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    shards, _, clf, _ = two_class
    space = ClassifierSpace(clf, device="cpu")
    drawn = _two_class(np.random.default_rng(7), 40)  # as many "generated" images as real ones, alike
    made = {
        "varied": {0: drawn[:40], 1: drawn[40:]},
        "collapsed": {k: np.repeat(drawn[40 * k : 40 * k + 1], 40, 0) for k in (0, 1)},
    }
    results = {}
    for name, images in made.items():
        files = {k: tmp_path / name / f"{k}.h5" for k in (0, 1)}
        for k, path in files.items():
            write_images(path, images[k], label=k)
        settings = {"inception": "off", "is_splits": 1}
        out = evaluate_model(
            name, files, shards, classifier_path=clf, stats_dir=tmp_path / "stats", settings=settings, device="cpu"
        )
        write_metrics(out, tmp_path / name / "metrics.json", tmp_path / name / "metrics.csv")
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        real = {k: load_real_stats(stats_path(tmp_path / "stats", "classifier", k)).features for k in (0, 1)}
        fake = {k: space.features(images[k])["pool"] for k in (0, 1)}
        pairs = {str(k): (fake[k], real[k]) for k in (0, 1)} | {
            "pooled": (np.concatenate([fake[0], fake[1]]), np.concatenate([real[0], real[1]]))
        }
        for key, (f, r) in pairs.items():
            ref = prc_features_to_metric(torch.from_numpy(f), torch.from_numpy(r), prc_neighborhood=3, verbose=False)
            for metric in ("precision", "recall"):
                section = results[name]["classifier"][metric]
                assert (section["pooled"] if key == "pooled" else section["per_label"][key]) == ref[metric], (
                    name,
                    key,
                    metric,
                )
        rows = list(csv.DictReader(open(tmp_path / name / "metrics.csv")))
        assert [float(r["classifier_recall"]) for r in rows] == [
            results[name]["classifier"]["recall"]["per_label"][k] for k in ("0", "1")
        ]
    varied, collapsed = results["varied"]["classifier"], results["collapsed"]["classifier"]
    assert results["varied"]["protocol"]["prc_n"] == {"pooled": 80, "per_label": {"0": 40, "1": 40}}
    assert collapsed["label_accuracy"]["pooled"] == 1.0 and varied["recall"]["pooled"] > 0.5
    assert collapsed["recall"]["pooled"] < 0.1 < varied["recall"]["pooled"] - collapsed["recall"]["pooled"]


def test_classifier_takes_rgb_64px_and_refuses_bad_input(tmp_path):
    rng = np.random.default_rng(5)
    x = _two_class(rng, 6, channels=3, size=64)
    shards = {}
    for label in (3, 7):
        shards[label] = tmp_path / f"{label}.h5"
        write_images(shards[label], x[(label == 7) * 6 : (label == 7) * 6 + 6], label=label)
    clf = tmp_path / "c.pt"
    train_classifier(shards, clf, epochs=1, seed=0, device="cpu")
    space = ClassifierSpace(clf, device="cpu")
    feats = space.features(x)
    assert feats["pool"].shape == (12, 128) and feats["logits"].shape == (12, 2)
    assert set(space.predict(x)) <= {3, 7}

    gray = tmp_path / "gray.h5"
    write_images(gray, rng.integers(0, 255, (4, 1, 64, 64), dtype=np.uint8), label=3)
    with pytest.raises(LabelwiseError, match="1-channel samples but the real shard"):
        evaluate_model(
            "m", {3: gray, 7: shards[7]}, shards, classifier_path=clf, settings={"inception": "off"}, device="cpu"
        )
    with pytest.raises(LabelwiseError, match="real shards for labels"):
        evaluate_model("m", {3: shards[3]}, shards, classifier_path=clf, settings={"inception": "off"}, device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(clf.read_bytes()[:500])
    with pytest.raises(LabelwiseError, match="unreadable classifier weights"):
        ClassifierSpace(bad)
