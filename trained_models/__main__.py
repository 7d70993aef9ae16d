"""``python -m trained_models``: the shipped models and their measured accuracy, as a markdown table."""
from __future__ import annotations

from trained_models.build import MAMBA_FAMILIES
from trained_models.checkpoint import read_card
from trained_models.registry import SHIPPED, names
from trained_models.tables import markdown_table


def _cell(metrics: dict, key: str) -> str:
    r = metrics.get(key)
    if not r:
        return "–"
    parts = [f"strict {100 * r['strict_accuracy']:.1f}"]
    if "close_accuracy" in r:
        parts.append(f"close {r['close_accuracy']:.3f}")
    if "glitch_rate" in r:
        parts.append(f"glitch rate {100 * r['glitch_rate']:.1f}%")
    return ", ".join(parts) + f" (len {r['min_len']}–{r['max_len']}, n={r['n']})"


def table() -> str:
    rows = []
    for name in names():
        card = read_card(SHIPPED / name)
        cfg = card["model"]["config"]
        arch = f"{card['model']['family']} {cfg['n_layers']}L d{cfg['d_model']}"
        if card["model"]["family"] in MAMBA_FAMILIES:
            arch += f" ({cfg.get('gate', 'nonnegative')})"
        else:
            arch += f" (pos {cfg.get('pos_encoding')})"
        m = card.get("metrics") or {}
        extra = [k for k in m if k not in ("bin0", "bin1")]
        lang = card["language"]["name"] + (f" {card['language']['params']}" if card["language"].get("params") else "")
        rows.append([f"`{name}`", lang, arch, f"{card.get('train_seconds', 0):.0f} s", _cell(m, "bin0"), _cell(m, "bin1"),
                     "; ".join(f"{k}: {_cell(m, k)}" for k in extra) or "–"])
    return "\n".join(markdown_table(["model", "language", "architecture", "train time", "bin0", "bin1", "bin2 / extra"],
                                     rows))


if __name__ == "__main__":
    print(table())
