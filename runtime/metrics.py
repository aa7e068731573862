"""Frame quality metrics shared by compare, bench, calibration and tests: PSNR and SSIM on uint8 clips."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two clips on the same scale (uint8 by default); inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM over frames (grayscale, 7x7 uniform windows, standard constants)."""
    from numpy.lib.stride_tricks import sliding_window_view

    def gray(x):
        x = np.asarray(x, np.float64)
        return x @ np.array([0.299, 0.587, 0.114]) if x.shape[-1] == 3 else x

    x, y = gray(a), gray(b)
    if x.ndim == 2:
        x, y = x[None], y[None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    win = min(7, x.shape[1], x.shape[2])
    out = []
    for fx, fy in zip(x, y):
        wx, wy = sliding_window_view(fx, (win, win)), sliding_window_view(fy, (win, win))
        mx, my = wx.mean((-1, -2)), wy.mean((-1, -2))
        vx, vy = wx.var((-1, -2)), wy.var((-1, -2))
        cov = (wx * wy).mean((-1, -2)) - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(float(s.mean()))
    return float(np.mean(out))
