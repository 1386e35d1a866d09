"""The CUSUM chart's PNG is drawn like the funnel plot's: at PNG_SCALE times the width a letter shows it at."""

from __future__ import annotations

from datetime import date, timedelta

from notifications.cusum_plot import cusum_chart
from notifications.plot import LETTER_WIDTH_PX, PNG_SCALE
from notifications.render import PNG_SIGNATURE


def test_the_cusum_png_is_twice_the_letter_width_and_the_same_bytes_each_time() -> None:
    start = date(2024, 1, 1)
    points = [(start + timedelta(days=i), 0.3 * i, 0.0, 0.1 - 0.05 * i) for i in range(20)]
    png = cusum_chart(points, alert=2.5, alarm=4.5, improvement=3.0, title="NELA 30-day mortality, RXF", fmt="png")
    assert png.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == LETTER_WIDTH_PX * PNG_SCALE and 0.5 < height / width < 1.0
    again = cusum_chart(points, alert=2.5, alarm=4.5, improvement=3.0, title="NELA 30-day mortality, RXF", fmt="png")
    assert again == png
