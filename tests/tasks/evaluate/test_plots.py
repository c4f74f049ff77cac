import numpy as np

from tasks.evaluate.plots import plot_confusion, plot_curves, plot_roc_pr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plot_curves_one_png_per_present_quantity(tmp_path):
    history = [
        {
            "epoch": e,
            "stage": "finetune",
            "train_loss": 0.7 - 0.1 * e,
            "val_loss": 0.6 - 0.05 * e,
            "val_video_auc": 0.6 + 0.05 * e,
            "val_video_f1": 0.5 + 0.05 * e,
            "lr": 1e-3 / e,
        }
        for e in range(1, 5)
    ]
    paths = plot_curves(history, tmp_path / "curves")
    assert [p.name for p in paths] == ["curve_loss.png", "curve_auc.png", "curve_f1.png", "curve_lr.png"]
    assert all(_is_png(p) for p in paths)  # no precision/recall keys: that figure is skipped
    assert plot_curves([{"epoch": 1}], tmp_path / "none") == []


def test_plot_roc_pr_and_confusion(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 100), 0, 1)
    roc, pr = plot_roc_pr(y, p, tmp_path, "test_video")
    assert (roc.name, pr.name) == ("test_video_roc.png", "test_video_pr.png")
    assert _is_png(roc) and _is_png(pr)
    assert plot_roc_pr(np.ones(5), np.linspace(0, 1, 5), tmp_path, "one_class") == []
    assert _is_png(plot_confusion(y, p, 0.5, tmp_path, "test_video"))
