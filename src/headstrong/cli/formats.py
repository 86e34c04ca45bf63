"""``headstrong formats``: the number formats, and what each bit flip does to a value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:  # rich and the formats load inside the command, to keep --help fast
    from rich.table import Table

    from headstrong.formats import NumberFormat


def register(app: typer.Typer) -> None:
    """Add the ``formats`` command to ``app``."""
    app.command("formats")(formats_command)


def formats_command(
    name: Optional[str] = typer.Argument(
        None, help="A format (fp32, bf16, int8, fxp16_8, bfp8_16, ...); omit to list them all."
    ),
    value: float = typer.Option(1.0, "--value", "-v", help="Value whose bit flips to show."),
    scale: Optional[float] = typer.Option(
        None, "--scale", help="Scale of int8/int16 (default: |value| maps to the largest code)."
    ),
) -> None:
    """List the number formats, or show a value's bits in one format and each flip's result."""
    from rich.console import Console

    from headstrong import formats

    console = Console()
    if name is None:
        console.print(_format_table())
        return
    fmt = formats.get(name, scale=scale) if scale is not None else formats.get(name)
    console.print(_flip_table(fmt, value))


def _format_table() -> Table:
    from rich.table import Table

    from headstrong import formats

    table = Table(title="Number formats (bit 0 = least significant)")
    for column in ("name", "bits", "layout", "range"):
        table.add_column(column)
    for name in formats.list():
        fmt = formats.get(name)
        table.add_row(fmt.name, str(fmt.bits), fmt.layout(), fmt.describe())
    table.caption = "also fxpW_F (W bits, F fraction bits) and bfpM_B (M-bit mantissas, blocks of B)"
    return table


def _flip_table(fmt: NumberFormat, value: float) -> Table:
    import torch
    from rich.table import Table

    x = torch.tensor([value], dtype=torch.float32)
    code = int(fmt.encode(x)[0])
    pattern = format(code, f"0{fmt.bits}b")
    hex_width = -(-fmt.bits // 4)
    role = {bit: group for group, bits in fmt.bit_groups().items() for bit in bits}
    flipped = fmt.flip(x.view(1, 1), torch.arange(fmt.bits).view(-1, 1))[:, 0]
    stored = fmt.quantize(x).item()
    table = Table(
        title=f"{value!r} in {fmt.name}: {pattern} (0x{code:0{hex_width}X}) = {stored:.9g}"
    )
    for column in ("bit", "role", "pattern after flip", "value after flip"):
        table.add_column(column, justify="right" if column != "role" else "left")
    for bit in reversed(range(fmt.bits)):
        after = format(code ^ (1 << bit), f"0{fmt.bits}b")
        table.add_row(str(bit), role[bit], after, f"{float(flipped[bit]):.9g}")
    return table
