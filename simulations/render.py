"""Rendering of the synthetic camera-site world: cameras, people, poses and motions.

`simulations.world` plans what each video shows (labels, attributes, segments, seeds); this
module turns one planned item into frames. Everything random here is drawn from the item's own
`numpy.random.Generator`, so an item renders to the same frames in any process and any order.

Geometry. People face the camera. A person is drawn in local units where the standing height
is 1 (feet at y = 0, top of the head at y = -1, y grows downwards) and "L" / "R" name the
IMAGE-left / image-right limb (the actor's right / left, as the actor faces the camera). Limbs
are two-segment chains solved by 2-D inverse kinematics from hand and foot targets, so every
pose is a few target points and poses blend linearly. Frames are drawn at the stored size
with PIL (optionally supersampled, see SUPERSAMPLE).

What is static (visible in one frame) and what is temporal (visible only over time):
- private attributes are drawn as big, bold colour areas and shapes that never change within a
  video: skin colour of face, hands and bare limbs; long hair + skirt vs short hair + trousers;
  an open face, a mask over its lower half with a scarf, or a full helmet with a dark visor;
  bare arms and legs vs sleeves and trousers; a partner whose hand rests on the actor's
  shoulder; a group of three or more people. Partners, group members and fight opponents show
  the same attribute values as the main actor, so nobody in view contradicts a label.
- actions are defined by which body part moves and how. Every video holds a random "held" pose
  (arms down / on the hips / raised / out / together at the chest; legs standing / wide / bent /
  one leg out sideways / one knee raised) drawn from the same poses the actions pass through, so
  a single frame of, say, a raised arm is as likely to come from `kick` (arm held up) as from
  `wave`. Only the motion tells them apart.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # only for annotations: simulations.world imports this module
    from simulations.world.planning import PlannedItem

# Frames are drawn at the stored size: supersampling (2 = draw at 2x, box-filter down) smooths
# edges but costs a third more time per frame, and the encoder resizes its input anyway.
SUPERSAMPLE = 1

# ---------------------------------------------------------------------------------------------
# Body geometry, local units (standing height 1), relative to the pelvis unless noted

# Cartoon proportions: a big head (a quarter of the height) keeps faces, masks and helmets
# large enough to survive downscaling and average pooling in a small encoder.
PELVIS_H = 0.46  # pelvis height above the ground when standing
HIP_X = 0.075
FOOT_X = 0.09  # standing foot, from the body's centre line
THIGH, SHIN = 0.24, 0.225
SHOULDER_X, SHOULDER_Y = 0.13, -0.26
NECK_TOP_Y = -0.3
HEAD_Y, HEAD_R = -0.41, 0.13  # the top of the head at height 1
UPPER_ARM, FOREARM = 0.15, 0.145
ARM_W, LEG_W, HAND_R = 0.06, 0.078, 0.045
LEG_LEN = THIGH + SHIN

# Pose vector: one float array, so poses blend linearly. L = image-left, R = image-right.
RX, AIR, CROUCH = 0, 1, 2  # root x (units of height), airborne height, pelvis lowering
FLX, FLY, FRX, FRY = 3, 4, 5, 6  # foot offsets from the standing foot positions
KFL, KFR = 7, 8  # 1 = knee raised forward (thigh foreshortened), 0 = knee bends outward
HLX, HLY, HRX, HRY = 9, 10, 11, 12  # hand targets, vectors from the shoulder
TILT = 13  # whole-body rotation about the feet (falls), radians, + = towards image-right
SHX, SHY = 14, 15  # shake (fights)
POSE_SIZE = 16

HAND_DOWN = 0.05, 0.295  # (outward, down) for a relaxed arm

# ---------------------------------------------------------------------------------------------
# Colours

LIGHT_SKIN = (232, 190, 158)
DARK_SKIN = (108, 68, 44)
CLOTHES = (
    (205, 40, 40),  # red
    (40, 75, 205),  # blue
    (40, 160, 65),  # green
    (235, 205, 40),  # yellow
    (135, 50, 175),  # purple
    (40, 185, 205),  # cyan
    (230, 95, 170),  # pink
    (125, 125, 130),  # grey
    (35, 35, 42),  # black
    (236, 236, 236),  # white
    (30, 42, 105),  # navy
)
HAIR = ((24, 20, 20), (70, 44, 28), (222, 192, 105), (165, 62, 30), (175, 175, 175))
MASKS = ((240, 240, 240), (150, 200, 240), (30, 30, 34), (60, 175, 150), (240, 150, 190))
HELMETS = ((215, 35, 35), (245, 205, 30), (245, 245, 245), (35, 85, 215), (240, 120, 20))
SHOES = (20, 20, 24)
EYES = (25, 20, 22)
MOUTH = (150, 45, 50)
VISOR = (28, 30, 40)

FACE_VISIBLE, FACE_PARTIAL, FACE_HIDDEN = 0, 1, 2


def _lit(colour: tuple[int, ...], light: tuple[float, float, float]) -> tuple[int, int, int]:
    """A colour under a camera's light (per-channel gain)."""
    return tuple(int(min(255, max(0, round(c * g)))) for c, g in zip(colour, light, strict=True))


def _jitter(rng: np.random.Generator, colour: tuple[int, ...], amount: float) -> tuple[int, ...]:
    scale = rng.uniform(1 - amount, 1 + amount)
    return tuple(int(min(255, max(0, c * scale + rng.uniform(-6, 6)))) for c in colour)


@dataclass(frozen=True)
class Look:
    """How one person looks; all colours already lit by the camera."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    top: tuple[int, int, int]
    bottom: tuple[int, int, int]
    legwear: tuple[int, int, int]
    cover: tuple[int, int, int]  # mask or helmet colour
    feminine: bool
    bare: bool
    face: int  # FACE_VISIBLE | FACE_PARTIAL | FACE_HIDDEN
    width: float  # body width scale


def face_state(attributes: dict[str, int]) -> int:
    """The face state encoded by the two face attributes (see world.ATTRIBUTES)."""
    if attributes["face_complete"]:
        return FACE_VISIBLE
    return FACE_PARTIAL if attributes["face_partial"] else FACE_HIDDEN


def sample_look(
    rng: np.random.Generator, attributes: dict[str, int], light: tuple[float, float, float]
) -> Look:
    """A person showing `attributes`; colours free within what the attributes fix."""
    skin = _jitter(rng, DARK_SKIN if attributes["skin_tone"] else LIGHT_SKIN, 0.07)
    top, bottom = rng.choice(len(CLOTHES), size=2, replace=False)
    legwear = CLOTHES[bottom] if rng.random() < 0.5 else CLOTHES[8]
    face = face_state(attributes)
    cover = MASKS[rng.integers(len(MASKS))] if face == FACE_PARTIAL else HELMETS[rng.integers(5)]
    return Look(
        skin=_lit(skin, light),
        hair=_lit(HAIR[rng.integers(len(HAIR))], light),
        top=_lit(CLOTHES[top], light),
        bottom=_lit(CLOTHES[bottom], light),
        legwear=_lit(legwear, light),
        cover=_lit(cover, light),
        feminine=bool(attributes["gender_presentation"]),
        bare=bool(attributes["semi_nudity"]),
        face=face,
        width=float(rng.uniform(0.92, 1.08)),
    )


# ---------------------------------------------------------------------------------------------
# Poses


def standing_pose() -> np.ndarray:
    """The neutral pose: standing, arms relaxed."""
    pose = np.zeros(POSE_SIZE)
    pose[HLX], pose[HLY] = -HAND_DOWN[0], HAND_DOWN[1]
    pose[HRX], pose[HRY] = HAND_DOWN[0], HAND_DOWN[1]
    return pose


ARM_HOLDS = ("down", "hips", "up", "out", "chest")
LEG_HOLDS = ("stand", "wide", "bent", "side", "knee")


def _arm_hold(kind: str, side: int, rng: np.random.Generator) -> tuple[float, float]:
    """Hand vector from the shoulder for a held arm; side -1 = image-left, +1 = image-right."""
    if kind == "down":
        return side * rng.uniform(0.03, 0.08), 0.29
    if kind == "hips":
        return -side * 0.02, rng.uniform(0.22, 0.26)
    if kind == "up":
        return side * rng.uniform(-0.02, 0.2), -rng.uniform(0.22, 0.29)
    if kind == "out":
        return side * rng.uniform(0.26, 0.3), rng.uniform(-0.08, 0.06)
    return -side * rng.uniform(0.1, 0.13), rng.uniform(0.1, 0.16)  # chest


def _side_leg(angle: float, side: int) -> tuple[float, float]:
    """Foot offset for a straight leg raised sideways by `angle` (radians)."""
    foot_x = side * (HIP_X + LEG_LEN * math.sin(angle))
    return foot_x - side * FOOT_X, LEG_LEN * math.cos(angle) - PELVIS_H


def held_pose(rng: np.random.Generator) -> np.ndarray:
    """A random still pose drawn from the poses that actions pass through."""
    pose = standing_pose()
    if rng.random() < 0.3:  # both arms alike (incl. hands together at the chest)
        kinds = (ARM_HOLDS[rng.integers(len(ARM_HOLDS))],) * 2
    else:
        kinds = tuple(ARM_HOLDS[i] for i in rng.integers(0, 4, size=2))
    pose[HLX], pose[HLY] = _arm_hold(kinds[0], -1, rng)
    pose[HRX], pose[HRY] = _arm_hold(kinds[1], 1, rng)
    legs = LEG_HOLDS[rng.choice(len(LEG_HOLDS), p=(0.3, 0.2, 0.2, 0.15, 0.15))]
    if legs == "wide":
        pose[FLX], pose[FRX] = -0.05, 0.05
    elif legs == "bent":
        pose[CROUCH] = rng.uniform(0.04, 0.12)
    elif legs == "side":
        pose[FLX], pose[FLY] = _side_leg(rng.uniform(0.35, 0.85), -1)
    elif legs == "knee":
        pose[FLY if rng.random() < 0.5 else FRY] = -rng.uniform(0.08, 0.2)
        pose[KFL] = pose[KFR] = 1.0
    return pose


def sample_motion(action: str, rng: np.random.Generator) -> dict[str, float]:
    """Random speed, phase and amplitude of one performance of `action`."""
    periods = {
        "walk_left": (13, 18),
        "walk_right": (13, 18),
        "march": (13, 18),
        "kick": (10, 14),
        "squat": (14, 20),
        "jump": (14, 18),
        "wave": (8, 11),
        "clap": (7, 10),
        "run": (6, 8),
        "fight": (2, 3),
        "fall": (7, 9),
    }
    lo, hi = periods[action]
    return {
        "period": float(rng.uniform(lo, hi)),
        "phase": float(rng.uniform(0, 2 * math.pi)),
        "amp": float(rng.uniform(0.85, 1.15)),
        "speed": float(rng.uniform(0.85, 1.0)),
        "side": float(rng.choice((-1.0, 1.0))),
    }


def action_pose(
    action: str, t: float, motion: dict[str, float], held: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The pose at frame `t` of a performance of `action`, with `held` for the idle limbs.

    Root translation (walks, runs) is not set here: see `root_velocity`.
    """
    pose = held.copy()
    w = 2 * math.pi * t / motion["period"] + motion["phase"]
    amp = motion["amp"]
    if action in ("walk_left", "walk_right", "march", "run"):
        lift = (0.26 if action == "run" else 0.19) * amp
        pose[FLX] = pose[FRX] = pose[CROUCH] = 0.0
        pose[FLY] = -lift * max(0.0, math.sin(w))
        pose[FRY] = -lift * max(0.0, -math.sin(w))
        pose[KFL] = pose[KFR] = 1.0
        if action == "run":  # arms pump
            pose[HLX], pose[HLY] = -0.12, 0.12 + 0.08 * math.sin(w)
            pose[HRX], pose[HRY] = 0.12, 0.12 - 0.08 * math.sin(w)
    elif action == "kick":  # image-left leg swings out sideways, straight
        angle = 0.95 * amp * max(0.0, math.sin(w)) ** 0.8
        pose[FLX], pose[FLY] = _side_leg(angle, -1)
        pose[FRX] = pose[FRY] = pose[CROUCH] = pose[KFL] = 0.0
    elif action == "squat":  # feet planted, pelvis goes down and up
        pose[CROUCH] = 0.15 * amp * (1 - math.cos(w)) / 2
        pose[FLX : FRY + 1] = 0.0
        pose[KFL] = pose[KFR] = 0.0
    elif action == "jump":  # crouch, take off with straight legs, land
        u = (w / (2 * math.pi)) % 1.0
        pose[FLX : FRY + 1] = 0.0
        pose[KFL] = pose[KFR] = 0.0
        if u < 0.45:
            pose[CROUCH], pose[AIR] = 0.13 * amp * math.sin(math.pi * u / 0.45), 0.0
        else:
            pose[CROUCH], pose[AIR] = 0.0, 0.17 * amp * math.sin(math.pi * (u - 0.45) / 0.55)
    elif action == "wave":  # image-left hand high, swinging side to side
        pose[HLX], pose[HLY] = -(0.07 + 0.13 * amp * math.sin(w)), -0.26
    elif action == "clap":  # both hands meet in front of the chest and part
        apart = (1 + math.cos(w)) / 2
        for hx, hy, side in ((HLX, HLY, -1), (HRX, HRY, 1)):
            pose[hx] = side * (-0.125 + 0.25 * apart * amp)
            pose[hy] = 0.13 + 0.03 * apart
    elif action == "fight":  # fast erratic flailing
        for hx, hy, side in ((HLX, HLY, -1), (HRX, HRY, 1)):
            pose[hx] = side * rng.uniform(-0.1, 0.32) + motion["side"] * rng.uniform(0, 0.12)
            pose[hy] = rng.uniform(-0.3, 0.2)
        pose[SHX], pose[SHY] = rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.02)
        pose[KFL] = pose[KFR] = 1.0
        pose[FLY], pose[FRY] = -rng.uniform(0, 0.08), -rng.uniform(0, 0.08)
    else:
        raise ValueError(f"unknown action {action!r}")
    return pose


WALK_SPEED = 1 / 40  # track lengths per frame: a walk crosses the free track in 40 frames
RUN_SPEED = 1 / 16


def root_velocity(action: str, motion: dict[str, float]) -> float:
    """Signed root speed in track lengths per frame (0 for actions in place).

    Walks and runs never go faster than these nominal speeds, so a plan that keeps the
    nominal track position inside [0, 1] keeps the rendered actor inside the frame.
    """
    if action == "walk_left":
        return -WALK_SPEED * motion["speed"]
    if action == "walk_right":
        return WALK_SPEED * motion["speed"]
    if action == "run":
        return motion["side"] * RUN_SPEED * motion["speed"]
    return 0.0


def fall_tilt(t: int, length: int, motion: dict[str, float]) -> float:
    """Body tilt at frame `t` of a fall segment of `length` frames: fall, lie, get up."""
    fall, rise = int(motion["period"]), 8
    if t < fall:
        return motion["side"] * math.pi / 2 * (t / fall) ** 2
    if t >= length - rise:
        return motion["side"] * math.pi / 2 * max(0.0, (length - t) / rise)
    return motion["side"] * math.pi / 2


# ---------------------------------------------------------------------------------------------
# Kinematics


def _ik(root: tuple[float, float], target: tuple[float, float], l1: float, l2: float, side: int):
    """Joint (elbow / knee) and end point of a two-segment limb; the joint bends outward."""
    dx, dy = target[0] - root[0], target[1] - root[1]
    dist = math.hypot(dx, dy)
    if dist < 1e-6:
        return (root[0] + side * l1, root[1]), target
    if dist >= l1 + l2:
        scale = (l1 + l2) / dist * 0.999
        dx, dy, dist = dx * scale, dy * scale, dist * scale
        target = (root[0] + dx, root[1] + dy)
    dist = max(dist, abs(l1 - l2) + 1e-4)
    along = (l1 * l1 - l2 * l2 + dist * dist) / (2 * dist)
    across = math.sqrt(max(0.0, l1 * l1 - along * along))
    ux, uy = dx / dist, dy / dist
    nx, ny = -uy, ux
    if nx * side < 0 or (abs(nx) < 1e-9 and ny > 0):
        nx, ny = -nx, -ny
    joint = (root[0] + along * ux + across * nx, root[1] + along * uy + across * ny)
    return joint, target


def skeleton(pose: np.ndarray, width: float) -> dict[str, tuple[float, float]]:
    """Joint positions in local units (origin on the ground under the standing pelvis)."""
    p = pose.tolist()
    root_x = p[RX] + p[SHX]
    pelvis = (root_x, -PELVIS_H + p[CROUCH] - p[AIR] + p[SHY])
    pts: dict[str, tuple[float, float]] = {"pelvis": pelvis}
    pts["neck"] = (pelvis[0], pelvis[1] + NECK_TOP_Y)
    pts["head"] = (pelvis[0], pelvis[1] + HEAD_Y)
    for name, side, fx, fy, kf, hx, hy in (
        ("l", -1, FLX, FLY, KFL, HLX, HLY),
        ("r", 1, FRX, FRY, KFR, HRX, HRY),
    ):
        hip = (pelvis[0] + side * HIP_X * width, pelvis[1])
        foot = (root_x + side * FOOT_X * width + p[fx], p[fy] - p[AIR])
        knee, foot = _ik(hip, foot, THIGH, SHIN, side)
        if p[kf] > 0:  # knee raised forward: the shin hangs from a knee above the foot
            fwd = (foot[0], foot[1] - SHIN)
            if math.hypot(fwd[0] - hip[0], fwd[1] - hip[1]) <= THIGH:
                knee = (knee[0] + p[kf] * (fwd[0] - knee[0]), knee[1] + p[kf] * (fwd[1] - knee[1]))
        shoulder = (pelvis[0] + side * SHOULDER_X * width, pelvis[1] + SHOULDER_Y)
        hand = (shoulder[0] + p[hx], shoulder[1] + p[hy])
        elbow, hand = _ik(shoulder, hand, UPPER_ARM, FOREARM, side)
        pts.update({f"hip_{name}": hip, f"knee_{name}": knee, f"foot_{name}": foot})
        pts.update({f"shoulder_{name}": shoulder, f"elbow_{name}": elbow, f"hand_{name}": hand})
    tilt = p[TILT]
    if tilt:
        cos, sin = math.cos(tilt), math.sin(tilt)
        px = root_x
        pts = {
            k: (px + cos * (x - px) - sin * y, sin * (x - px) + cos * y)
            for k, (x, y) in pts.items()
        }
    return pts


# ---------------------------------------------------------------------------------------------
# Drawing people


@dataclass(frozen=True)
class Placement:
    """Where a person stands in the (supersampled) image: ground point and height in pixels."""

    x: float
    ground: float
    height: float


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, colour) -> None:
    r = width / 2
    draw.line((a, b), fill=colour, width=max(1, round(width)))
    draw.ellipse((a[0] - r, a[1] - r, a[0] + r, a[1] + r), fill=colour)
    draw.ellipse((b[0] - r, b[1] - r, b[0] + r, b[1] + r), fill=colour)


def _limb(draw: ImageDraw.ImageDraw, a, b, c, width: float, colour) -> None:
    """A two-segment limb with a rounded joint and root; the far end is covered by hand/shoe."""
    r = width / 2
    draw.line((a, b, c), fill=colour, width=max(1, round(width)), joint="curve")
    draw.ellipse((a[0] - r, a[1] - r, a[0] + r, a[1] + r), fill=colour)


def _lerp(a, b, f: float):
    return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)


@dataclass(frozen=True)
class _Torso:
    """A person's torso frame in pixels, which tilts with the body: `at(ox, oy)` is the point
    `ox` towards image-right and `oy` up from the pelvis, in units of the person's height."""

    pelvis: tuple[float, float]
    up: tuple[float, float]  # unit vector from the pelvis towards the neck
    side: tuple[float, float]  # unit vector towards image-right of the body
    k: float  # the person's height in pixels

    def at(self, ox: float, oy: float) -> tuple[float, float]:
        return (
            self.pelvis[0] + self.k * (ox * self.side[0] - oy * self.up[0]),
            self.pelvis[1] + self.k * (ox * self.side[1] - oy * self.up[1]),
        )


def draw_person(
    draw: ImageDraw.ImageDraw,
    look: Look,
    pose: np.ndarray,
    place: Placement,
    skip_arm: str = "",
) -> dict[str, tuple[float, float]]:
    """Draw one person; returns the joints in pixels. `skip_arm` ("l"/"r") leaves one arm out.

    Back to front: long hair behind, legs, hips, torso, arms, long hair in front, head.
    """
    local = skeleton(pose, look.width)
    k = place.height
    px = {n: (place.x + k * x, place.ground + k * y) for n, (x, y) in local.items()}
    pelvis, neck = px["pelvis"], px["neck"]
    up = ((neck[0] - pelvis[0]) / (NECK_TOP_Y * k), (neck[1] - pelvis[1]) / (NECK_TOP_Y * k))
    torso = _Torso(pelvis, up, (-up[1], up[0]), k)

    if look.feminine:
        _draw_hair_behind(draw, look, torso)
    _draw_legs(draw, look, px, k)
    _draw_hips(draw, look, torso)
    _draw_torso(draw, look, torso, neck)
    for s in ("l", "r"):
        if s != skip_arm:
            draw_arm(draw, look, px, s, k)
    if look.feminine:
        _draw_hair_in_front(draw, look, torso)
    _draw_head(draw, look, px["head"], float(pose[TILT]), torso)
    return px


def _draw_hair_behind(draw: ImageDraw.ImageDraw, look: Look, torso: _Torso) -> None:
    """Long hair: a mass behind the head, wider than it."""
    top, bottom = torso.at(0, -HEAD_Y + 0.03), torso.at(0, -SHOULDER_Y + 0.02)
    _capsule(draw, top, bottom, 0.36 * torso.k, look.hair)


def _draw_legs(draw: ImageDraw.ImageDraw, look: Look, px: dict, k: float) -> None:
    """Legs (trousers or leggings, or bare with shorts / a short skirt) and shoes."""
    for s in ("l", "r"):
        hip, knee, foot = px[f"hip_{s}"], px[f"knee_{s}"], px[f"foot_{s}"]
        if look.bare:
            _limb(draw, hip, knee, foot, LEG_W * 0.95 * k, look.skin)
            if not look.feminine:
                shorts = (hip, _lerp(hip, knee, 0.45))
                draw.line(shorts, fill=look.bottom, width=round(LEG_W * 1.25 * k))
        else:
            colour = look.legwear if look.feminine else look.bottom
            _limb(draw, hip, knee, foot, LEG_W * 1.05 * k, colour)
        r = 0.045 * k
        draw.ellipse((foot[0] - r * 1.3, foot[1] - r * 0.6, foot[0] + r * 1.3, foot[1] + r), SHOES)


def _draw_hips(draw: ImageDraw.ImageDraw, look: Look, torso: _Torso) -> None:
    """Hips: a skirt (flared trapezoid) or the seat of the trousers / shorts."""
    w = look.width
    if look.feminine:
        hem = 0.14 if look.bare else 0.25
        skirt = [
            torso.at(-0.105 * w, 0.03),
            torso.at(0.105 * w, 0.03),
            torso.at(0.2 * w, -hem),
            torso.at(-0.2 * w, -hem),
        ]
        draw.polygon(skirt, fill=look.bottom)
    else:
        seat = [
            torso.at(-0.1 * w, 0.03),
            torso.at(0.1 * w, 0.03),
            torso.at(0.11 * w, -0.06),
            torso.at(-0.11 * w, -0.06),
        ]
        draw.polygon(seat, fill=look.bottom)


def _draw_torso(
    draw: ImageDraw.ImageDraw, look: Look, torso: _Torso, neck: tuple[float, float]
) -> None:
    """The top (narrower at the waist when feminine), the neck, and a bare neckline when
    semi-nude."""
    w = look.width
    waist = 0.085 if look.feminine else 0.11
    top = [
        torso.at(-0.16 * w, -SHOULDER_Y + 0.025),
        torso.at(0.16 * w, -SHOULDER_Y + 0.025),
        torso.at(waist * w, 0.02),
        torso.at(-waist * w, 0.02),
    ]
    draw.polygon(top, fill=look.top)
    draw.line((neck, torso.at(0, -SHOULDER_Y)), fill=look.skin, width=max(1, round(0.07 * torso.k)))
    if look.bare:
        neckline = [
            torso.at(-0.09 * w, -SHOULDER_Y + 0.02),
            torso.at(0.09 * w, -SHOULDER_Y + 0.02),
            torso.at(0, -SHOULDER_Y - 0.08),
        ]
        draw.polygon(neckline, fill=look.skin)


def _draw_hair_in_front(draw: ImageDraw.ImageDraw, look: Look, torso: _Torso) -> None:
    """Long hair falls over the shoulders in front, also from under a helmet."""
    for sx in (-1, 1):
        a, b = torso.at(sx * 0.11, -HEAD_Y), torso.at(sx * 0.12, -SHOULDER_Y - 0.1)
        draw.line((a, b), fill=look.hair, width=max(1, round(0.08 * torso.k)))


def _draw_head(
    draw: ImageDraw.ImageDraw, look: Look, head: tuple[float, float], tilt: float, torso: _Torso
) -> None:
    """The head: a helmet with a dark visor, or a face, open or masked."""
    head_r = HEAD_R * torso.k
    if look.face == FACE_HIDDEN:
        _draw_helmet(draw, look, head, head_r, tilt)
        return
    box = (head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r)
    deg = math.degrees(tilt)
    draw.ellipse(box, fill=look.skin)
    hair_box = (
        box[0] - 0.08 * head_r,
        box[1] - 0.12 * head_r,
        box[2] + 0.08 * head_r,
        box[3] + 0.04 * head_r,
    )
    draw.chord(hair_box, 180 + deg, 360 + deg, fill=look.hair)  # short hair / fringe
    r_eye = max(1.0, 0.15 * head_r)
    for sx in (-1, 1):
        e = _rot(head, sx * 0.38 * head_r, -0.05 * head_r, tilt)
        draw.ellipse((e[0] - r_eye, e[1] - r_eye, e[0] + r_eye, e[1] + r_eye), fill=EYES)
    if look.face == FACE_PARTIAL:
        _draw_mask(draw, look, box, head_r, deg, torso)
    else:
        a = _rot(head, -0.32 * head_r, 0.48 * head_r, tilt)
        b = _rot(head, 0.32 * head_r, 0.48 * head_r, tilt)
        draw.line((a, b), fill=MOUTH, width=max(1, round(0.16 * head_r)))


def _draw_helmet(
    draw: ImageDraw.ImageDraw, look: Look, head: tuple[float, float], head_r: float, tilt: float
) -> None:
    """A full helmet, a little bigger than the head, with an opaque visor: no face at all."""
    hr = head_r * 1.13
    draw.ellipse((head[0] - hr, head[1] - hr, head[0] + hr, head[1] + hr), fill=look.cover)
    visor = [
        _rot(head, -0.8 * head_r, -0.35 * head_r, tilt),
        _rot(head, 0.8 * head_r, -0.35 * head_r, tilt),
        _rot(head, 0.75 * head_r, 0.2 * head_r, tilt),
        _rot(head, -0.75 * head_r, 0.2 * head_r, tilt),
    ]
    draw.polygon(visor, fill=VISOR)


def _draw_mask(
    draw: ImageDraw.ImageDraw,
    look: Look,
    box: tuple[float, float, float, float],
    head_r: float,
    deg: float,
    torso: _Torso,
) -> None:
    """A mask over the lower half of the face (eyes visible), and a scarf at the neck."""
    mask_box = (
        box[0] - 0.04 * head_r,
        box[1] - 0.04 * head_r,
        box[2] + 0.04 * head_r,
        box[3] + 0.06 * head_r,
    )
    draw.chord(mask_box, 2 + deg, 178 + deg, fill=look.cover)
    w = look.width
    scarf = (torso.at(-0.1 * w, -SHOULDER_Y + 0.035), torso.at(0.1 * w, -SHOULDER_Y - 0.03))
    draw.line(scarf, fill=look.cover, width=max(1, round(0.09 * torso.k)))


def draw_arm(draw: ImageDraw.ImageDraw, look: Look, px: dict, s: str, k: float) -> None:
    """One arm (sleeve or skin) with its hand, from joints in pixels."""
    sleeve = look.skin if look.bare else look.top
    shoulder, elbow, hand = px[f"shoulder_{s}"], px[f"elbow_{s}"], px[f"hand_{s}"]
    _limb(draw, shoulder, elbow, hand, ARM_W * (0.9 if look.bare else 1.05) * k, sleeve)
    r = HAND_R * k
    draw.ellipse((hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r), fill=look.skin)


def _rot(centre, dx: float, dy: float, tilt: float) -> tuple[float, float]:
    if not tilt:
        return centre[0] + dx, centre[1] + dy
    c, s = math.cos(tilt), math.sin(tilt)
    return centre[0] + c * dx - s * dy, centre[1] + s * dx + c * dy


# ---------------------------------------------------------------------------------------------
# Cameras: background, light, sensor noise


@lru_cache(maxsize=16)
def background(camera_seed: int, size: int) -> Image.Image:
    """The static scene of one camera at the supersampled size (texture, floor, objects)."""
    rng = np.random.default_rng(camera_seed)
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    horizon = int(big * rng.uniform(0.4, 0.62))
    wall, floor = _muted(rng, 0.35, 0.8), _muted(rng, 0.25, 0.65)
    draw.rectangle((0, 0, big, horizon), fill=wall)
    draw.rectangle((0, horizon, big, big), fill=floor)
    _draw_wall_texture(draw, rng, wall, horizon, big)
    _draw_floor_texture(draw, rng, wall, floor, horizon, big)
    _draw_static_objects(draw, rng, horizon, big)
    return _vignette(img, rng)


def _muted(rng: np.random.Generator, value_lo: float, value_hi: float) -> tuple[int, int, int]:
    """A random greyish colour (low saturation) of brightness in [value_lo, value_hi]."""
    h, s, v = rng.random(), rng.uniform(0.08, 0.35), rng.uniform(value_lo, value_hi)
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))


def _shade(colour: tuple[int, ...], f: float) -> tuple[int, ...]:
    """`colour` darkened (f < 1) or lightened (f > 1), clipped to [0, 255]."""
    return tuple(int(min(255, max(0, c * f))) for c in colour)


def _draw_wall_texture(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    wall: tuple[int, ...],
    horizon: int,
    big: int,
) -> None:
    """One of four wall textures: vertical panels, bricks, horizontal bands or blotches."""
    style = rng.integers(4)
    if style == 0:  # vertical panels
        step = int(rng.integers(big // 10, big // 4))
        for x in range(int(rng.integers(step)), big, step):
            draw.rectangle(
                (x, 0, x + step // 2, horizon), fill=_shade(wall, rng.uniform(0.82, 0.95))
            )
    elif style == 1:  # bricks
        # At least 4 px per brick row, or the brick's inner rectangle would be inverted.
        bh = int(rng.integers(max(4, big // 24), max(5, big // 12)))
        for row, y in enumerate(range(0, horizon, bh)):
            off = (row % 2) * bh
            for x in range(-off, big, 2 * bh):
                c = _shade(wall, rng.uniform(0.85, 1.1))
                draw.rectangle((x + 1, y + 1, x + 2 * bh - 2, y + bh - 2), fill=c)
    elif style == 2:  # horizontal bands
        for y in range(0, horizon, int(rng.integers(big // 16, big // 6))):
            draw.rectangle((0, y, big, y + big // 40), fill=_shade(wall, rng.uniform(0.7, 0.9)))
    else:  # blotches
        for _ in range(12):
            x, y, r = rng.uniform(0, big), rng.uniform(0, horizon), rng.uniform(big / 20, big / 6)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_shade(wall, rng.uniform(0.85, 1.12)))


def _draw_floor_texture(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    wall: tuple[int, ...],
    floor: tuple[int, ...],
    horizon: int,
    big: int,
) -> None:
    """Floor tiles or planks in perspective, then a darker skirting line at the horizon."""
    tile = int(rng.integers(big // 10, big // 5))
    for x in range(0, big, tile):
        draw.line((x, horizon, x + (x - big / 2) * 0.6, big), fill=_shade(floor, 0.85), width=2)
    for y in range(horizon, big, tile // 2):
        draw.line((0, y, big, y), fill=_shade(floor, 0.9), width=1)
    draw.rectangle((0, horizon - big // 60, big, horizon), fill=_shade(wall, 0.6))


def _draw_static_objects(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, horizon: int, big: int
) -> None:
    """Windows / posters on the wall, boxes and poles on the floor."""
    for _ in range(int(rng.integers(1, 4))):
        w, h = rng.uniform(0.1, 0.25) * big, rng.uniform(0.08, 0.2) * big
        x, y = rng.uniform(0, big - w), rng.uniform(0.05 * big, max(0.06 * big, horizon - h - 4))
        c = _muted(rng, 0.3, 0.95)
        draw.rectangle((x, y, x + w, y + h), fill=c, outline=_shade(c, 0.55), width=3)
    for _ in range(int(rng.integers(1, 4))):
        w, h = rng.uniform(0.08, 0.2) * big, rng.uniform(0.06, 0.18) * big
        x, y = rng.uniform(0, big - w), horizon + rng.uniform(-0.05, 0.08) * big
        c = _muted(rng, 0.3, 0.8)
        draw.rectangle((x, y - h, x + w, y), fill=c, outline=_shade(c, 0.6), width=3)
        draw.polygon(
            [(x, y - h), (x + w, y - h), (x + w * 1.15, y - h * 1.2), (x + w * 0.15, y - h * 1.2)],
            fill=_shade(c, 1.2),
        )
    for _ in range(int(rng.integers(0, 3))):
        x, w = rng.uniform(0, big), rng.uniform(0.015, 0.035) * big
        draw.rectangle(
            (x, rng.uniform(0, 0.2) * big, x + w, horizon + 0.04 * big),
            fill=_muted(rng, 0.2, 0.7),
        )


def _vignette(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A soft vignette: the light falls off towards the edges of the (square) image."""
    big = img.size[0]
    arr = np.asarray(img).astype(np.float32)
    yy, xx = np.mgrid[0:big, 0:big] / big - 0.5
    fall_off = 1 - rng.uniform(0.1, 0.35) * (xx**2 + yy**2) * 2
    arr *= fall_off[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def lit_background(camera: dict[str, Any], size: int) -> Image.Image:
    """The camera's background under its light."""
    return _lit_background(int(camera["seed"]), size, tuple(camera["light"]))


@lru_cache(maxsize=16)
def _lit_background(seed: int, size: int, light: tuple[float, float, float]) -> Image.Image:
    arr = np.asarray(background(seed, size)).astype(np.float32) * np.asarray(light, np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _noise_bank(camera_seed: int, sigma: float, size: int, bank: int = 16) -> np.ndarray:
    """A camera's Gaussian sensor noise frames, (bank, S, S, 3) int16 (a Sensor holds them in
    their four flips, made once per camera: `_flipped_noise_bank`)."""
    rng = np.random.default_rng([camera_seed, 1])
    noise = rng.standard_normal((bank, size, size, 3), dtype=np.float32) * sigma
    return np.round(noise).astype(np.int16)


@lru_cache(maxsize=16)
def _flipped_noise_bank(camera_seed: int, sigma: float, size: int) -> np.ndarray:
    """The camera's noise frames in their four flips, (bank, 4, S, S, 3) int16, contiguous:
    flip f is flipped vertically unless f & 1 and horizontally unless f & 2. Adding a
    contiguous frame took half the time of adding a flipped view."""
    bank = _noise_bank(camera_seed, sigma, size)
    flips = [bank[:, :: 1 if f & 1 else -1, :: 1 if f & 2 else -1] for f in range(4)]
    return np.ascontiguousarray(np.stack(flips, axis=1))


class Sensor:
    """Temporal sensor noise: per frame, one of the camera's noise frames, randomly flipped."""

    def __init__(self, rng: np.random.Generator, camera: dict[str, Any], size: int) -> None:
        self.rng = rng
        self.bank = _flipped_noise_bank(int(camera["seed"]), float(camera["noise"]), size)

    def expose(self, img: Image.Image) -> np.ndarray:
        """(Supersampled) PIL image -> (S, S, 3) uint8 frame with noise."""
        if SUPERSAMPLE > 1:
            img = img.reduce(SUPERSAMPLE)
        frame = np.asarray(img).astype(np.int16)  # (S, S, 3)
        pick = int(self.rng.integers(4 * len(self.bank)))
        frame += self.bank[pick >> 2, pick & 3]  # (S, S, 3)
        np.clip(frame, 0, 255, out=frame)
        return frame.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Scenes: who is where, doing what, at every frame

RAMP = 3  # frames to blend into and out of an action inside untrimmed videos
PARTNER_GAP = 0.3  # partner's distance from the main actor, units of the main actor's height
BODY_MARGIN = 0.24  # half-width kept inside the frame, units of height


@dataclass
class _Person:
    look: Look
    place: Placement
    held: np.ndarray
    sway: tuple[float, float]  # period, phase of idle sway


def item_rng(seed: list[int]) -> np.random.Generator:
    """The generator of one item, from the entropy and spawn key the plan gave it."""
    entropy, spawn_key = seed[:2], tuple(seed[2:])
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=spawn_key))
    )


def _sway(person: _Person, t: int) -> float:
    return 0.006 * math.sin(2 * math.pi * t / person.sway[0] + person.sway[1])


def _events(item: PlannedItem, num_frames: int) -> tuple[list[tuple[int, int, str, float]], bool]:
    """What happens when in a video: sorted (start, end, action, direction) events, and whether
    the video is trimmed (one action from the first frame to the last)."""
    if item.script is None:
        return [(0, num_frames, item.action, 0.0)], True
    events = [(s["start"], s["end"], s["action_name"], 0.0) for s in item.script.segments]
    events += [
        (a["start"], a["end"], a["anomaly"], float(a.get("direction", 1.0)))
        for a in item.script.anomalies
    ]
    return sorted(events), False


class Scene:
    """One planned item (see `simulations.world.plan_world`) as a function of frame index.

    Everything random about the video (events' motions, the people, their places) is drawn
    here, in a fixed order, from the item's generator; `frame(t)` then draws only what moves.
    """

    def __init__(self, item: PlannedItem, num_frames: int | None = None) -> None:
        rng = item_rng(item.seed)
        self.rng = rng
        self.size = int(item.frame_size)
        self.num_frames = int(item.num_frames if num_frames is None else num_frames)
        camera = item.camera
        light = tuple(camera["light"])
        attributes = item.attributes
        big = self.size * SUPERSAMPLE
        self.background = lit_background(camera, self.size)
        self.sensor = Sensor(rng, camera, self.size)

        # What happens when, and how each event is performed (a run keeps its planned direction)
        self.events, self.trimmed = _events(item, self.num_frames)
        self.motions = [sample_motion(ev[2], rng) for ev in self.events]
        for motion, ev in zip(self.motions, self.events, strict=True):
            if ev[2] == "run":
                motion["side"] = ev[3]

        # The main actor: big in frame, feet low enough that a jump stays inside
        height = big * rng.uniform(0.62, 0.78)
        ground = big * rng.uniform(min(0.97, 1.22 * height / big), 0.97)
        self.main = _Person(
            sample_look(rng, attributes, light),
            Placement(0.0, ground, height),
            held_pose(rng),
            (rng.uniform(40, 70), rng.uniform(0, 2 * math.pi)),
        )

        # A partner touching the main actor (personal relationship) takes room off the track
        self.partner: _Person | None = None
        self.partner_side = 0
        if attributes["personal_relationship"]:
            self.partner_side, self.partner = self._sample_partner(
                attributes, light, ground, height
            )
        self.track = self._track(height, big)

        # The track position of the main actor at every frame (walks and runs move it)
        self.positions = self._positions(item)

        # A group in the background (social relationship): it stands still far away, so it is
        # drawn into this video's backdrop once
        self.group: list[_Person] = []
        if attributes["social_relationship"]:
            self.group = self._sample_group(attributes, light, height, big)
        if self.group:
            self.background = self.background.copy()
            draw = ImageDraw.Draw(self.background)
            for person in self.group:
                draw_person(draw, person.look, person.held, person.place)

        # An opponent appears beside the main actor for a fight (drawn anew for each fight)
        self.opponent: _Person | None = None
        for ev in self.events:
            if ev[2] == "fight":
                self.opponent = self._sample_opponent(attributes, light, ground, height)

    def _track(self, height: float, big: int) -> tuple[float, float]:
        """Pixel range of the main actor's x: the body stays inside the frame, and so does the
        partner beside it."""
        lo, hi = BODY_MARGIN * height, big - BODY_MARGIN * height
        if self.partner_side < 0:
            lo += PARTNER_GAP * height
        elif self.partner_side > 0:
            hi -= PARTNER_GAP * height
        return lo, hi

    def _sample_opponent(
        self, attributes: dict[str, int], light: tuple[float, ...], ground: float, height: float
    ) -> _Person:
        """A fight opponent about as tall as the main actor; placed at each frame of the fight."""
        rng = self.rng
        return _Person(
            sample_look(rng, attributes, light),
            Placement(0.0, ground, height * rng.uniform(0.9, 1.0)),
            held_pose(rng),
            (50.0, 0.0),
        )

    def _sample_partner(
        self, attributes: dict[str, int], light: tuple[float, ...], ground: float, height: float
    ) -> tuple[int, _Person]:
        """The side (-1 = image-left) and look of a partner standing beside the main actor,
        feet together and planted."""
        rng = self.rng
        side = int(rng.choice((-1, 1)))
        p_height = height * rng.uniform(0.9, 1.0)
        p_held = held_pose(rng)
        p_held[FLX : FRY + 1] = 0.0
        p_held[CROUCH] = 0.0
        p_held[KFL] = p_held[KFR] = 0.0
        partner = _Person(
            sample_look(rng, attributes, light),
            Placement(0.0, ground, p_height),
            p_held,
            (rng.uniform(40, 70), rng.uniform(0, 2 * math.pi)),
        )
        return side, partner

    def _sample_group(
        self, attributes: dict[str, int], light: tuple[float, ...], height: float, big: int
    ) -> list[_Person]:
        """Small people far away, so that at least three are in view in all, back to front.
        They stand in the slots farthest from where the main actor (and partner) mostly are."""
        rng = self.rng
        lo, hi = self.track
        count = 2 - int(attributes["personal_relationship"]) + int(rng.integers(0, 2))
        occupied = lo + (hi - lo) * float(np.mean(self.positions))
        occupied += self.partner_side * 0.5 * PARTNER_GAP * height
        centres = big * (0.1 + 0.8 * (np.arange(5) + 0.5) / 5)
        slots = np.argsort(-np.abs(centres - occupied), kind="stable")[:count]
        group = []
        for slot in sorted(slots.tolist()):
            g_height = big * rng.uniform(0.28, 0.36)
            x = centres[slot] + big * 0.16 * rng.uniform(-0.3, 0.3)
            g_ground = big * rng.uniform(0.5, 0.6)
            g_held = held_pose(rng)
            g_held[FLX : FRY + 1] = 0.0
            g_held[KFL] = g_held[KFR] = 0.0
            group.append(
                _Person(
                    sample_look(rng, attributes, light),
                    Placement(float(x), g_ground, g_height),
                    g_held,
                    (rng.uniform(30, 60), rng.uniform(0, 2 * math.pi)),
                )
            )
        return sorted(group, key=lambda person: person.place.ground)

    def _positions(self, item: PlannedItem) -> np.ndarray:
        """Track position in [0, 1] per frame; walks and runs move at the nominal speed."""
        velocity = np.zeros(self.num_frames)
        for (start, end, action, _), motion in zip(self.events, self.motions, strict=True):
            v = root_velocity(action, motion)
            if v:
                velocity[start:end] = v * self._envelope(start, end)
        if item.script is not None:
            start_pos = float(item.script.start_pos)
        else:  # a trimmed clip: start where the whole walk fits
            travel = float(np.sum(velocity))
            start_pos = self.rng.uniform(max(0.0, -travel), min(1.0, 1.0 - travel))
        return np.clip(start_pos + np.concatenate(([0.0], np.cumsum(velocity)[:-1])), 0, 1)

    def _envelope(self, start: int, end: int) -> np.ndarray:
        t = np.arange(start, end)
        if self.trimmed:
            return np.ones(len(t))
        return np.clip(np.minimum(t - start + 1, end - t) / RAMP, 0, 1)

    def _event_at(self, t: int) -> int | None:
        for i, (start, end, _, _) in enumerate(self.events):
            if start <= t < end:
                return i
        return None

    def frame(self, t: int) -> np.ndarray:
        """The (S, S, 3) uint8 frame at index t."""
        img = self.background.copy()
        draw = ImageDraw.Draw(img)
        main = self.main
        lo, hi = self.track
        main.place = Placement(
            lo + (hi - lo) * self.positions[t], main.place.ground, main.place.height
        )
        pose, index = self._main_pose(t)
        action = "" if index is None else self.events[index][2]

        # Fight opponent, behind the main actor
        if action == "fight" and self.opponent is not None:
            self._draw_opponent(draw, t, index)

        # Partner behind, its inner hand on the main actor's near shoulder drawn last
        if self.partner is not None:
            partner = self.partner
            partner_pose, inner = self._partner_pose(t, pose, action, index)
            partner_px = draw_person(
                draw, partner.look, partner_pose, partner.place, skip_arm=inner
            )
            draw_person(draw, main.look, pose, main.place)
            draw_arm(draw, partner.look, partner_px, inner, partner.place.height)
        else:
            draw_person(draw, main.look, pose, main.place)
        return self.sensor.expose(img)

    def _main_pose(self, t: int) -> tuple[np.ndarray, int | None]:
        """The main actor's pose at frame t (the held pose, or the current event blended in)
        and the index of that event (None between events)."""
        main = self.main
        pose = main.held.copy()
        index = self._event_at(t)
        if index is not None:
            start, end, action, _ = self.events[index]
            motion = self.motions[index]
            if action == "fall":
                pose[TILT] = fall_tilt(t - start, end - start, motion)
            else:
                moving = action_pose(action, t - start, motion, main.held, self.rng)
                env = (
                    1.0
                    if self.trimmed or action in ("fight", "run")
                    else float(self._envelope(start, end)[t - start])
                )
                pose = pose + env * (moving - pose)
        pose[RX] += _sway(main, t)
        return pose, index

    def _draw_opponent(self, draw: ImageDraw.ImageDraw, t: int, index: int) -> None:
        """The fight opponent on the side of the main actor with more room, flailing back."""
        main, opp = self.main, self.opponent
        assert opp is not None
        side = -1 if self.positions[t] > 0.5 else 1
        opp.place = Placement(
            main.place.x + side * 0.28 * main.place.height, opp.place.ground, opp.place.height
        )
        opp_pose = action_pose(
            "fight", t, {**self.motions[index], "side": -side}, opp.held, self.rng
        )
        draw_person(draw, opp.look, opp_pose, opp.place)

    def _partner_pose(
        self, t: int, pose: np.ndarray, action: str, index: int | None
    ) -> tuple[np.ndarray, str]:
        """Place the partner beside the main actor (posed `pose`) and return its pose, inner
        hand on the main actor's near shoulder, and which of its arms ("l"/"r") that is. The
        partner steps along when the main actor walks or runs."""
        main, partner, side = self.main, self.partner, self.partner_side
        assert partner is not None
        partner.place = Placement(
            main.place.x + side * PARTNER_GAP * main.place.height,
            partner.place.ground,
            partner.place.height,
        )
        partner_pose = partner.held.copy()
        if action in ("walk_left", "walk_right", "run"):
            assert index is not None
            stride = action_pose(
                "march", t - self.events[index][0], self.motions[index], partner.held, self.rng
            )
            partner_pose[FLX : KFR + 1] = stride[FLX : KFR + 1]
        partner_pose[RX] += _sway(partner, t)
        main_pts = skeleton(pose, main.look.width)
        near = "l" if side > 0 else "r"  # the main actor's shoulder facing the partner
        sx, sy = main_pts[f"shoulder_{near}"]
        target_x = (main.place.x + main.place.height * sx - partner.place.x) / partner.place.height
        target_y = main.place.ground + main.place.height * (sy - 0.02) - partner.place.ground
        target_y /= partner.place.height
        inner = "l" if side > 0 else "r"  # the partner's arm facing the main actor
        shoulder = skeleton(partner_pose, partner.look.width)[f"shoulder_{inner}"]
        hx, hy = (HLX, HLY) if inner == "l" else (HRX, HRY)
        partner_pose[hx], partner_pose[hy] = target_x - shoulder[0], target_y - shoulder[1]
        return partner_pose, inner


def render_frames(item: PlannedItem) -> Iterator[np.ndarray]:
    """All frames of a planned video item, in order, as (S, S, 3) uint8 arrays."""
    scene = Scene(item)
    for t in range(scene.num_frames):
        yield scene.frame(t)


def render_still(item: PlannedItem) -> np.ndarray:
    """The single (S, S, 3) uint8 frame of a planned still item (a privacy image): a random
    frame of a clip of `item.clip_frames` frames."""
    scene = Scene(item, num_frames=item.clip_frames)
    return scene.frame(int(scene.rng.integers(scene.num_frames)))
