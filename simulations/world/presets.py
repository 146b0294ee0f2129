"""World presets: how many sites, files, frames and pixels a world has (tiny / default / large)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulations.world.schema import WorldError


@dataclass(frozen=True)
class Preset:
    """Sizes of a world. Tuples are (train, val) for client sites and pre-training,
    (train, val, test) for the central world; counts are videos (PNG frames for privacy).

    tiny     3 sites, 64 px, ~110 files: the whole world in a few seconds (tests).
    default  8 sites, 96 px, 6892 files (~232k frames; world version 3): 111 s with 2
             workers in benchmarks/main.py's 615 s run. The central AR test split has 1000
             videos (a top-1 near 95% has a standard error of 0.7 points); the TAD and AD
             test splits have 96 each, because a 2-point drop is the effect those tasks must
             show (with 24 test videos the standard errors were 2-5 points). Their fresh
             heads train on 96 videos and are chosen on 48: with 32 training videos the raw
             baselines moved by 20 AD points between folds of the same videos (`latentveil
             crossfit`), and the released features' 8 directions beat the raw features' 256
             for want of training data, not for better features.
             purpose="pretrain": 2000 AR clips + 2000 stills in ~36 s.
    large    16 sites, more of everything (benchmarks), about 2.3x default.

    96 px: the main actor is 62-78% of the frame height (60-75 px), the head a quarter of
    that, so a mask or helmet covers hundreds of pixels and survives yuv420p chroma
    subsampling and an encoder's resize to 64 px; rendering and x264 cost grows with the
    pixel count, and 112 px would not fit the 2-minute budget of the default world.
    """

    name: str
    frame_size: int  # stored square side, pixels (even: yuv420p)
    fps: int
    clip_frames: int  # frames of an `ar` / `bias` video
    long_frames: int  # frames of a `tad` / `ad` video
    sites: int
    alpha: float  # Dirichlet concentration of the site mixes
    site_ar: tuple[int, int]
    site_tad: tuple[int, int]
    site_ad: tuple[int, int]
    central_cameras: int
    central_ar: tuple[int, int, int]
    central_tad: tuple[int, int, int]
    central_ad: tuple[int, int, int]
    central_privacy: tuple[int, int, int]
    central_bias: tuple[int, int, int]
    pretrain_cameras: int
    pretrain_ar: tuple[int, int]
    pretrain_privacy: tuple[int, int]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        frame_size=64,
        fps=25,
        clip_frames=32,
        long_frames=64,
        sites=3,
        alpha=0.3,
        site_ar=(6, 2),
        site_tad=(1, 1),
        site_ad=(2, 1),
        central_cameras=2,
        central_ar=(8, 4, 8),
        central_tad=(1, 1, 2),
        central_ad=(2, 1, 2),
        central_privacy=(8, 4, 8),
        central_bias=(8, 2, 8),
        pretrain_cameras=2,
        pretrain_ar=(8, 4),
        pretrain_privacy=(8, 4),
    ),
    "default": Preset(
        name="default",
        frame_size=96,
        fps=25,
        clip_frames=32,
        long_frames=160,
        sites=8,
        alpha=0.3,
        site_ar=(128, 32),
        site_tad=(10, 2),
        site_ad=(10, 2),
        central_cameras=4,
        central_ar=(800, 300, 1000),
        central_tad=(96, 48, 96),
        central_ad=(96, 48, 96),
        central_privacy=(1000, 400, 1000),
        central_bias=(200, 80, 160),
        pretrain_cameras=8,
        pretrain_ar=(1600, 400),
        pretrain_privacy=(1600, 400),
    ),
    "large": Preset(
        name="large",
        frame_size=96,
        fps=25,
        clip_frames=32,
        long_frames=160,
        sites=16,
        alpha=0.3,
        site_ar=(300, 60),
        site_tad=(20, 4),
        site_ad=(20, 4),
        central_cameras=6,
        central_ar=(2000, 600, 4000),
        central_tad=(60, 20, 60),
        central_ad=(60, 20, 60),
        central_privacy=(2000, 600, 2000),
        central_bias=(480, 160, 320),
        pretrain_cameras=12,
        pretrain_ar=(4000, 800),
        pretrain_privacy=(4000, 800),
    ),
}


def resolve_preset(preset: str | Preset, sites: int | None = None, alpha: float | None = None):
    """The preset by name (or as given) with `sites` and `alpha` overridden when not None."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise WorldError(f"unknown world preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if sites is not None:
        if sites < 1:
            raise WorldError(f"a world needs at least one site, got sites={sites}")
        preset = replace(preset, sites=int(sites))
    if alpha is not None:
        if not alpha > 0:
            raise WorldError(f"the Dirichlet concentration alpha must be > 0, got {alpha}")
        preset = replace(preset, alpha=float(alpha))
    return preset
