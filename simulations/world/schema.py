"""What a world holds: attribute, action, anomaly, dataset and split names; the manifest keys
and where manifests and world.json live; the format version; the error a world can raise.

Every module of `simulations.world` (and its users) takes these names from here.
"""

from __future__ import annotations

from common.errors import LatentveilError

WORLD_VERSION = 4  # bump when the same seed would render different files or labels
# 4: the frames of 3, encoded without x264's AVX-512 code (3 was not byte-identical from one
# generation to the next on an AVX-512 CPU: simulations.world.writing.x264_options)
WORLD_INFO_FILE = "world.json"  # in the world root, written last: a world with it is complete

ATTRIBUTES = (
    "skin_tone",  # 1 = dark skin on face, hands and any bare limb; 0 = light skin
    "gender_presentation",  # 1 = feminine (long hair, skirt); 0 = masculine (short hair, trousers)
    "face_complete",  # 1 = the whole face is visible
    "face_partial",  # 1 = a mask covers the lower half of the face (eyes visible)
    "semi_nudity",  # 1 = bare arms and legs (sleeveless top, shorts / short skirt)
    "personal_relationship",  # 1 = a second person stands touching the actor (hand on shoulder)
    "social_relationship",  # 1 = a group: three or more people in view
)
# face_complete and face_partial encode one face state: visible (1, 0), masked (0, 1), or
# hidden under a full helmet with an opaque visor (0, 0); (1, 1) never occurs.
FACE_STATES = ("visible", "partial", "hidden")
FACE_ENCODING = {"visible": (1, 0), "partial": (0, 1), "hidden": (0, 0)}  # (complete, partial)

ACTIONS = (
    "walk_left",  # march-like steps while moving towards image-left
    "walk_right",  # the same steps towards image-right
    "march",  # the same steps on the spot
    "kick",  # the image-left leg swings out sideways and back, repeatedly
    "squat",  # feet planted, the body goes down and up
    "jump",  # crouch, take off with straight legs, land
    "wave",  # the image-left hand, raised, swings side to side
    "clap",  # both hands meet in front of the chest and part
)
ANOMALIES = ("fall", "fight", "run")  # only in `ad` videos, never among ACTIONS
DATASETS = ("ar", "tad", "ad", "privacy", "bias")
SPLITS = ("train", "val", "test")
PURPOSES = {"evaluate": 0, "pretrain": 1}
SUBCLASSES = ("masculine", "feminine")  # index = gender_presentation

MANIFEST_KEYS = (
    "video_id",
    "path",
    "split",
    "site",
    "camera",
    "labels",
    "attributes",
    "num_frames",
    "sha256",
)


def manifest_path(group: str, dataset: str) -> str:
    """Where the manifest of one dataset of one group lives, relative to the world root."""
    return f"{group}/{dataset}/manifest.jsonl"


class WorldError(LatentveilError):
    """A world folder or request that cannot be used, with what to do about it."""
