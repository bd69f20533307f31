"""COCO's 80 category names with their 91-index category ids, shipped with the package.

Torchvision's COCO checkpoints predict 91 labels where label == COCO category id (0 is background; the 11
unused ids are "N/A"), so `COCO_LABEL_NAMES[label]` names a prediction of those weights.
"""

# fmt: off
COCO_LABEL_NAMES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle",                 # 0-4
    "airplane", "bus", "train", "truck", "boat",                                # 5-9
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",       # 10-14
    "bench", "bird", "cat", "dog", "horse",                                     # 15-19
    "sheep", "cow", "elephant", "bear", "zebra",                                # 20-24
    "giraffe", "N/A", "backpack", "umbrella", "N/A",                            # 25-29
    "N/A", "handbag", "tie", "suitcase", "frisbee",                             # 30-34
    "skis", "snowboard", "sports ball", "kite", "baseball bat",                 # 35-39
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",     # 40-44
    "N/A", "wine glass", "cup", "fork", "knife",                                # 45-49
    "spoon", "bowl", "banana", "apple", "sandwich",                             # 50-54
    "orange", "broccoli", "carrot", "hot dog", "pizza",                         # 55-59
    "donut", "cake", "chair", "couch", "potted plant",                          # 60-64
    "bed", "N/A", "dining table", "N/A", "N/A",                                 # 65-69
    "toilet", "N/A", "tv", "laptop", "mouse",                                   # 70-74
    "remote", "keyboard", "cell phone", "microwave", "oven",                    # 75-79
    "toaster", "sink", "refrigerator", "N/A", "book",                           # 80-84
    "clock", "vase", "scissors", "teddy bear", "hair drier",                    # 85-89
    "toothbrush",                                                               # 90
)
# fmt: on

PLACEHOLDER_NAMES = frozenset({"N/A", "__background__"})
"""Class names that mark a label slot with no category (COCO's unused ids, the background)."""

COCO_CATEGORIES: tuple[dict, ...] = tuple(
    {"id": i, "name": n} for i, n in enumerate(COCO_LABEL_NAMES) if n not in PLACEHOLDER_NAMES
)
"""The 80 real categories as `{"id": coco_category_id, "name": name}`, in id order."""


def coco_label_classes() -> list[dict]:
    """The class list of a 91-label COCO model: entry `label - 1` for labels 1..90 (gaps named "N/A")."""
    return [{"id": i, "name": n} for i, n in enumerate(COCO_LABEL_NAMES) if i > 0]


def is_placeholder(category: dict) -> bool:
    """True for a class-list entry that names no category ("N/A", "__background__"): never emitted."""
    return str(category["name"]) in PLACEHOLDER_NAMES


def real_categories(classes: list[dict]) -> list[dict]:
    """The categories a model can emit: `classes` without placeholders, one entry per category id (the first),
    sorted by id. This list is the single source of every output's category list (COCO `categories`, YOLO
    `names`: YOLO class index i is entry i of this list)."""
    out: dict[int, dict] = {}
    for c in classes:
        if not is_placeholder(c) and int(c["id"]) not in out:
            out[int(c["id"])] = c
    return [out[k] for k in sorted(out)]


COCO_PERSON_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
"""COCO's 17 person keypoints, in the order of the `keypoints` triples of person_keypoints_*.json and of the
heatmap channels of torchvision's Keypoint R-CNN."""

COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
"""The limbs of COCO's person category: pairs of 1-based keypoint indices (COCO's `skeleton`)."""


def coco_person_classes() -> list[dict]:
    """The class list of torchvision's COCO Keypoint R-CNN (labels: 0 background, 1 person): one COCO
    category with its `keypoints` names and `skeleton`, as in COCO's person_keypoints json."""
    return [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(COCO_PERSON_KEYPOINT_NAMES),
            "skeleton": [list(pair) for pair in COCO_PERSON_SKELETON],
        }
    ]
