"""What schema-driven tests cannot learn from the OpenAPI document: what a photo is (a `base64-image` string, a part
of the form's image types).

Run schemathesis's command line with it: SCHEMATHESIS_HOOKS=tests.schemathesis_hooks st run URL/openapi.json
(the in-process test in tests/test_api.py registers it by importing this module).
"""

from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from schemas.api import IMAGE_FORMAT


def _photo(kind: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=kind)
    return buffer.getvalue()


# Small photos in the formats the API names, of two sizes and colours (a shape is not what is tested here).
KINDS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
PHOTOS = {media: [_photo(kind, size, colour) for size, colour in (((8, 8), (200, 30, 30)), ((64, 96), (20, 20, 180)))]
          for media, kind in KINDS.items()}

PHOTO_BASE64 = [base64.b64encode(photo).decode("ascii") for photos in PHOTOS.values() for photo in photos]

schemathesis.openapi.format(IMAGE_FORMAT, st.sampled_from(PHOTO_BASE64))
for media, photos in PHOTOS.items():
    schemathesis.openapi.media_type(media, st.sampled_from(photos))


def _is_photo(data: object) -> bool:
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception:  # noqa: BLE001 - any failure to read is "not a photo"
        return False
    return True


@schemathesis.hook
def filter_case(context, case):
    """Forms only where the form is what it claims: no schema-invalid forms (a form carries only text, so a value's
    type mutation, an integer for a string, cannot reach the service and what arrives is valid; tests/test_api.py
    sends its invalid bodies as JSON for the same reason), and no form whose photo part is not a photo (the stateful
    phase fills file parts with its own samples, a zip or a PDF, even where the document names image types)."""
    if case.media_type != "multipart/form-data":
        return True
    meta = case.meta
    body = case.body if isinstance(case.body, dict) else {}
    negative = meta is not None and meta.generation.mode.is_negative
    return not negative and ("image" not in body or _is_photo(body["image"]))
