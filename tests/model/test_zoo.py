import concurrent.futures
import hashlib
import time
import urllib.error

import pytest
import torch

import mrseg.model.zoo as zoo
from mrseg.model.coco_classes import COCO_CATEGORIES, coco_label_classes
from mrseg.model.convert import mrseg_to_torchvision
from mrseg.model.zoo import ARCHS, WeightsError, build_model, load_model, load_pretrained


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def refuse(url, dst, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(zoo, "download_url_to_file", refuse)


def test_offline_zoo_weights_error_says_what_to_fetch_and_where(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as err:
        load_model("coco-r50-fpn")
    msg = str(err.value)
    assert "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in msg
    assert (
        str(tmp_path / "torch-home" / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
        in msg
    )
    assert "--weights PATH" in msg
    assert not list((tmp_path / "torch-home" / "hub" / "checkpoints").iterdir())  # no partial file left


def test_offline_imagenet_backbone_error(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match="resnet18-f37072fd.pth"):
        load_pretrained(build_model("r18-fpn", 2), "imagenet", "r18-fpn")


def test_cached_file_is_used_without_download(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    model = build_model("r18-fpn", 2)
    from torchvision.models import resnet18

    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    reference = resnet18()
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    assert load_pretrained(model, "imagenet", "r18-fpn") == ([], [])
    assert torch.equal(model.backbone.bottom_up.res3[0].conv1.weight, reference.layer2[0].conv1.weight)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_build_every_arch(arch):
    model = build_model(arch, 7)
    assert model.num_classes == 7
    assert model.roi_heads.mask_head.predictor.out_channels == 8


def _checkpoint(model, classes, arch="r18-fpn"):
    return {
        "format": "mrseg-checkpoint",
        "version": 1,
        "arch": arch,
        "classes": classes,
        "transform": {"min_size": 320, "max_size": 512},
        "model": model.state_dict(),
        "optimizer": {"state": {}},
    }


def test_mrseg_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    classes = [{"id": 5, "name": "date"}, {"id": 9, "name": "fig"}]
    model = build_model("r18-fpn", 2, min_size=320, max_size=512)
    path = tmp_path / "last.pt"
    torch.save(_checkpoint(model, classes), path)
    loaded, info = load_model(path)
    assert info.arch == "r18-fpn" and info.classes == classes
    assert loaded.transform.min_size == (320,) and loaded.transform.max_size == 512
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_torchvision_state_dict_file_needs_arch_and_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("r18-fpn", 90)
    path = tmp_path / "tv.pth"
    torch.save(mrseg_to_torchvision(model.state_dict()), path)
    with pytest.raises(WeightsError, match="--arch"):
        load_model(path)
    loaded, info = load_model(path, arch="r18-fpn")
    assert info.classes == coco_label_classes()
    assert torch.equal(loaded.roi_heads.mask_head.deconv.weight, model.roi_heads.mask_head.deconv.weight)
    # and our own keys in a bare file load too
    torch.save(model.state_dict(), tmp_path / "ours.pth")
    load_model(tmp_path / "ours.pth", arch="r18-fpn")


def test_mismatched_file_names_the_keys(tmp_path):
    state = build_model("r18-fpn", 3).state_dict()
    del state["roi_heads.box_predictor.bbox_pred.bias"]
    state["roi_heads.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        load_model(path, arch="r18-fpn")
    assert "roi_heads.box_predictor.bbox_pred.bias" in str(err.value)
    assert "roi_heads.extra.weight" in str(err.value)
    state = build_model("r18-fpn", 3).state_dict()
    state["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(99)
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match=r"shape mismatches: roi_heads.box_predictor.cls_score.bias: file \(99,\)"
    ):
        load_model(path, arch="r18-fpn")


def test_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_model(tmp_path / "junk.pt", arch="r18-fpn")
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("r200-fpn", 3)


def test_load_pretrained_keeps_random_heads_for_other_class_counts(tmp_path):
    source = build_model("r18-fpn", 90)
    path = tmp_path / "coco-like.pth"
    torch.save(mrseg_to_torchvision(source.state_dict()), path)
    target = build_model("r18-fpn", 3)
    skipped, fresh = load_pretrained(target, path, "r18-fpn")
    assert fresh == []
    assert skipped == sorted(
        [
            "roi_heads.box_predictor.bbox_pred.bias",
            "roi_heads.box_predictor.bbox_pred.weight",
            "roi_heads.box_predictor.cls_score.bias",
            "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.mask_head.predictor.bias",
            "roi_heads.mask_head.predictor.weight",
        ]
    )
    assert torch.equal(target.roi_heads.box_head.fcs[0].weight, source.roi_heads.box_head.fcs[0].weight)


def test_coco_classes():
    assert len(COCO_CATEGORIES) == 80
    assert COCO_CATEGORIES[0] == {"id": 1, "name": "person"} and COCO_CATEGORIES[-1] == {
        "id": 90,
        "name": "toothbrush",
    }
    classes = coco_label_classes()
    assert (
        len(classes) == 90
        and classes[18 - 1] == {"id": 18, "name": "dog"}
        and classes[12 - 1]["name"] == "N/A"
    )


def test_norm_option_puts_trainable_norms_in_backbone_and_fpn():
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d

    default = build_model("r18-fpn", 3)
    assert isinstance(default.backbone.bottom_up.stem.bn1, FrozenBatchNorm2d)
    assert default.backbone.fpn.lateral_convs[0].norm is None
    for norm, kind in (("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)):
        model = build_model("r18-fpn", 3, norm=norm)
        backbone_norms = [m for m in model.backbone.modules() if isinstance(m, (FrozenBatchNorm2d, kind))]
        assert backbone_norms and all(isinstance(m, kind) for m in backbone_norms), norm
        assert isinstance(model.backbone.fpn.output_convs[0].norm, kind)
        assert model.backbone.fpn.output_convs[0].conv.bias is None  # the norm carries the bias
    frozen_v2 = build_model("r50-fpn-v2", 3, norm="frozen-bn")
    assert isinstance(frozen_v2.backbone.bottom_up.stem.bn1, FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="unknown norm"):
        build_model("r18-fpn", 3, norm="layer")
    with pytest.raises(ValueError, match="5 positive sizes"):
        build_model("r18-fpn", 3, anchor_sizes=(16, 32))


def test_bn_model_updates_its_statistics_in_training_only():
    torch.manual_seed(0)
    model = build_model("r18-fpn", 2, min_size=64, max_size=64, norm="bn", freeze_at=0)
    bn = model.backbone.bottom_up.stem.bn1
    before = bn.running_mean.clone()
    model.eval()
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])
    assert torch.equal(bn.running_mean, before)
    model.train()
    target = {
        "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.ones(1, 64, 64, dtype=torch.uint8),
    }
    model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [target, target])
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_checkpoint_records_norm_anchor_sizes_and_channels(tmp_path, norm):
    torch.manual_seed(0)
    classes = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    sizes = (8, 16, 32, 64, 128)
    model = build_model("r18-fpn", 2, norm=norm, anchor_sizes=sizes, channels=64).eval()
    path = tmp_path / "last.pt"
    extra = {"norm": norm, "anchor_sizes": list(sizes), "channels": 64}
    torch.save({**_checkpoint(model, classes), **extra}, path)
    loaded, _ = load_model(path)
    assert loaded.rpn.anchor_generator.sizes == sizes
    assert loaded.backbone.out_channels == 64 and loaded.roi_heads.mask_head.predictor.in_channels == 64
    assert type(loaded.backbone.bottom_up.stem.bn1) is type(model.backbone.bottom_up.stem.bn1)
    batch = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model.backbone(batch), loaded.backbone(batch)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    # without the norm key: a frozen-BN model, which cannot take these weights
    torch.save({**_checkpoint(model, classes), "channels": 64}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(path)


def _served(tmp_path, content: bytes, claimed: bytes | None = None):
    """A file:// URL for `content`, named NAME-PREFIX.pth with PREFIX the SHA-256 of `claimed` (default:
    of `content`), as torchvision names its files."""
    prefix = hashlib.sha256(content if claimed is None else claimed).hexdigest()[:8]
    src = tmp_path / "server" / f"weights-{prefix}.pth"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    return src.as_uri(), prefix


def _cache(tmp_path):
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def test_download_with_matching_hash_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    content = b"good weights " * 1000
    url, _ = _served(tmp_path, content)
    path = zoo.fetch(url)
    assert path.read_bytes() == content
    assert path.parent == _cache(tmp_path)
    assert [p.name for p in _cache(tmp_path).iterdir()] == [path.name]


def test_corrupt_download_is_rejected_and_deleted(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url, prefix = _served(tmp_path, b"truncated or tampered", claimed=b"the real weights")
    with pytest.raises(WeightsError) as err:
        zoo.fetch(url)
    msg = str(err.value)
    got = hashlib.sha256(b"truncated or tampered").hexdigest()
    assert url in msg and prefix in msg and got in msg
    assert "deleted" in msg and "run again" in msg
    assert list(_cache(tmp_path).iterdir()) == []  # no weights, no partial file, no lock file
    # A second call downloads again (nothing bad was cached) and fails the same way.
    with pytest.raises(WeightsError, match="corrupt"):
        zoo.fetch(url)


def test_concurrent_fetches_download_once(monkeypatch, tmp_path):
    # Ranks of a torchrun job without a process group: threads stand in for them (flock locks are per open
    # file, so they exclude each other within one process too).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    content = b"weights" * 10000
    url, _ = _served(tmp_path, content)
    calls = []
    real = zoo.download_url_to_file

    def slow_download(u, dst, progress=True):
        calls.append(dst)
        time.sleep(0.3)
        real(u, dst, progress=False)

    monkeypatch.setattr(zoo, "download_url_to_file", slow_download)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: zoo.fetch(url), range(4)))
    assert len(calls) == 1
    assert len(set(paths)) == 1 and paths[0].read_bytes() == content


@pytest.mark.parametrize(
    ("source_arch", "target_arch", "fresh_head"),
    [("r18-fpn", "r18-fpn-kp", "keypoint_head"), ("r18-fpn-box", "r18-fpn", "mask_head")],
)
def test_load_pretrained_starts_a_missing_head_as_built(tmp_path, source_arch, target_arch, fresh_head):
    """COCO mask weights start a keypoint model (and box-only weights a mask model): everything the source has
    is loaded, the head it lacks keeps its constructor's initialisation and is reported apart."""
    torch.manual_seed(0)
    source = build_model(source_arch, 1, channels=32)
    path = tmp_path / "source.pth"
    torch.save(mrseg_to_torchvision(source.state_dict()), path)
    torch.manual_seed(1)
    target = build_model(target_arch, 1, channels=32)
    built = {k: v.clone() for k, v in target.state_dict().items()}
    resized, fresh = load_pretrained(target, path, target_arch)
    assert resized == []  # one class on both sides
    prefix = f"roi_heads.{fresh_head}."
    assert fresh and all(k.startswith(prefix) for k in fresh)
    assert sorted(fresh) == sorted(k for k in built if k.startswith(prefix))
    loaded = source.state_dict()
    for key, value in target.state_dict().items():
        want = built[key] if key.startswith(prefix) else loaded[key]
        assert torch.equal(value, want), key


def test_load_pretrained_refuses_another_layout_and_a_head_cut_short(tmp_path):
    source = build_model("r18-fpn-kp", 1, channels=32)
    state = mrseg_to_torchvision(source.state_dict())
    with pytest.raises(WeightsError, match="missing keys"):  # another backbone
        torch.save(state, tmp_path / "kp.pth")
        load_pretrained(build_model("r34-fpn-kp", 1, channels=32), tmp_path / "kp.pth", "r34-fpn-kp")
    del state[next(k for k in state if "keypoint_head" in k)]  # a head present but incomplete is an error
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="missing keys"):
        load_pretrained(build_model("r18-fpn-kp", 1, channels=32), tmp_path / "cut.pth", "r18-fpn-kp")
    wide = build_model("r18-fpn", 1, channels=64).state_dict()
    torch.save(mrseg_to_torchvision(wide), tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="tensors of another shape.*backbone.fpn"):  # another --channels
        load_pretrained(build_model("r18-fpn", 1, channels=32), tmp_path / "wide.pth", "r18-fpn")
    with pytest.raises(WeightsError, match="same layout"):
        load_pretrained(build_model("r18-fpn-kp", 1), "coco-r50-fpn", "r18-fpn-kp")
