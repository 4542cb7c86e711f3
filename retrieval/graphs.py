"""The encoder's towers as TorchScript graphs: one call that runs without holding Python's GIL.

Why: an eager PyTorch forward is a few hundred small ops, and each hands the GIL back and takes it again. In the
service the towers run on a worker thread beside the event loop, whose work (parsing, the embedded store's calls,
the explanation) holds the GIL; every hand-back then waits for the loop, up to Python's switch interval (5 ms). A
batch of eight phrases took 7 ms alone and 514-611 ms beside a busy Python thread, against 18-19 ms as a graph
(docs/performance.md, "The towers as graphs"). The graphs compute the same vectors (a test checks them).
"""

import logging  # no `from __future__ import annotations`: TorchScript reads the annotations
import warnings
from typing import Any, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)


class TrimmedTextTower(nn.Module):
    """open_clip's CLIP text tower over the tokens up to the batch's last end token (retrieval.model.encode_trimmed),
    written so that TorchScript compiles it whole: the slicing, the pooling at the end token and the projection."""

    has_matrix: bool

    def __init__(self, model: Any, cast: torch.dtype):
        super().__init__()
        self.token_embedding, self.transformer, self.ln_final = model.token_embedding, model.transformer, model.ln_final
        self.positional_embedding = model.positional_embedding
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        projection = model.text_projection  # a matrix, a module (a Linear, int8's packed one), or none
        self.has_matrix = isinstance(projection, torch.Tensor)
        self.register_buffer("matrix", projection.detach() if self.has_matrix else torch.empty(0), persistent=False)
        self.projection = projection if isinstance(projection, nn.Module) else nn.Identity()
        self.cast = cast

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :n]
        x = self.token_embedding(tokens).to(self.cast) + self.positional_embedding[:n].to(self.cast)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # pooled at the end token
        return x @ self.matrix if self.has_matrix else self.projection(x)


def scripted_text_tower(model: Any, cast: torch.dtype) -> Optional[Any]:
    """The trimmed text tower as a graph; None (the eager tower then runs) where TorchScript cannot compile it."""
    return _scripted(TrimmedTextTower(model, cast).eval(), "text tower")


def scripted_image_tower(model: Any) -> Optional[Any]:
    """open_clip's visual tower as a graph; None where TorchScript cannot compile it (a timm or HF tower, say)."""
    return _scripted(model.visual, "visual tower")


def warmed(graph: Optional[Any], example: torch.Tensor, what: str, calls: int = 2) -> Optional[Any]:
    """`graph` once run on `example` as often as TorchScript's executor profiles before it optimises (twice, ~0.2 s
    each: at load, not on a shopper's first search); None, so the tower runs eagerly, if the graph fails there."""
    try:
        with torch.inference_mode():
            for _ in range(calls if graph is not None else 0):
                graph(example)
    except Exception as err:  # noqa: BLE001 - compiled but not runnable as compiled: the eager tower stays right
        log.info("the %s runs eagerly: its graph failed on an example (%s: %s)", what, type(err).__name__, err)
        return None
    return graph


def _scripted(module: nn.Module, what: str) -> Optional[Any]:
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated in favour of torch.export
            warnings.simplefilter("ignore")
            return torch.jit.script(module)
    except Exception as err:  # noqa: BLE001 - any tower TorchScript cannot read runs eagerly, as before
        log.info("the %s runs eagerly: TorchScript cannot compile it (%s: %s)", what, type(err).__name__,
                 str(err).splitlines()[0] if str(err) else "")
        return None
