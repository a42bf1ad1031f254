"""Write evaluation rows as JSON, CSV and a Markdown table."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

COLUMNS = ('dataset', 'protocol', 'images', 'input_psnr', 'input_ssim', 'psnr', 'ssim', 'seconds')


def average_row(rows: Sequence[dict]) -> dict:
    """Mean of every numeric column over the rows (images summed)."""
    out = {'dataset': 'average', 'protocol': '/'.join(sorted({r.get('protocol', '') for r in rows}))}
    for col in COLUMNS[2:]:
        values = [r[col] for r in rows if r.get(col) is not None]
        if values:
            out[col] = sum(values) if col in ('images', 'seconds') else sum(values) / len(values)
    return out


def _fmt(col: str, value) -> str:
    if value is None:
        return ''
    if col in ('psnr', 'input_psnr'):
        return f'{value:.2f}'
    if col in ('ssim', 'input_ssim'):
        return f'{value:.4f}'
    if col == 'seconds':
        return f'{value:.1f}'
    return str(value)


def markdown_table(rows: Sequence[dict]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '|'.join('---' for _ in cols) + '|']
    lines += ['| ' + ' | '.join(_fmt(c, r.get(c)) for c in cols) + ' |' for r in rows]
    return '\n'.join(lines)


def write_report(rows: Sequence[dict], out_dir: str | Path, meta: dict | None = None) -> dict:
    """Write ``metrics.json``, ``metrics.csv`` and ``metrics.md`` (rows plus an average row)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    all_rows = rows + ([average_row(rows)] if len(rows) > 1 else [])
    (out_dir / 'metrics.json').write_text(json.dumps({'meta': meta or {}, 'rows': all_rows}, indent=2))
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in all_rows)]
    with open(out_dir / 'metrics.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(all_rows)
    table = markdown_table(all_rows)
    note = ''
    if meta:
        note = '\n\n' + '\n'.join(f'- {k}: {v}' for k, v in meta.items())
    (out_dir / 'metrics.md').write_text(table + note + '\n')
    return {'rows': all_rows, 'markdown': table}
