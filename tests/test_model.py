"""The model factory: spec parsing, loud failures with guidance, real normalised embeddings from the offline model."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.model import PRECISIONS, ModelLoadError, ModelSpec, load_model, resolve_precision


def test_spec_parsing():
    assert ModelSpec.parse("ViT-B-32/laion2b_s34b_b79k") == ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert ModelSpec.parse("hf-hub:Marqo/marqo-fashionSigLIP") == ModelSpec("hf-hub:Marqo/marqo-fashionSigLIP")
    local = ModelSpec.parse("local-dir:./models/x")
    assert local.local_dir is not None and local.local_dir.is_absolute()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelLoadError, match="valid names:.*ViT-B-32"):
        load_model("ViT-Nope/whatever", device="cpu")


def test_missing_tag_refuses_random_weights_and_lists_tags():
    with pytest.raises(ModelLoadError, match="random weights.*laion2b_s34b_b79k"):
        load_model("ViT-B-32", device="cpu")


def test_missing_local_dir_says_what_it_needs(tmp_path):
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        load_model(f"local-dir:{tmp_path}", device="cpu")


def test_unreachable_hub_weights_fail_with_guidance():
    """Offline (HF_HUB_OFFLINE=1), a hub model fails at start-up with how to supply local weights."""
    with pytest.raises(ModelLoadError, match="local-dir:PATH"):
        load_model("RN50/openai", device="cpu")


def test_precision_choices():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    with pytest.raises(ModelLoadError, match="valid: fp32"):
        resolve_precision("int3", "cpu")
    import torch

    assert {name: getattr(torch, dtype) for name, (dtype, _) in PRECISIONS.items()} == {
        "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}
    with pytest.raises(ModelLoadError, match="CPU only"):
        resolve_precision("int8", "cuda")


def test_int8_quantizes_the_linears_and_keeps_the_vectors(encoder, model_spec, offline_catalog):
    """int8 packs both towers' Linear weights as int8 (dynamic quantization); its vectors stay those of fp32 to a
    cosine of 0.999, words and photos, so an fp32 index can be searched with int8 queries."""
    from PIL import Image
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    int8 = load_model(model_spec, device="cpu", precision="int8")
    assert int8.precision == "int8"
    assert {name.split(".")[0] for name, m in int8.model.named_modules() if isinstance(m, Int8Linear)} >= {
        "transformer", "visual"}
    texts = ["blue jeans", "a red dress with puffed sleeves", "white sports shoes"]
    pixels = np.stack([np.asarray(Image.open(offline_catalog / "images" / f"{i}.jpg").convert("RGB").resize((96, 96)))
                       for i in ("10438", "10127")])
    for reduced, full in ((int8.encode_texts(texts), encoder.encode_texts(texts)),
                          (int8.encode_images(pixels), encoder.encode_images(pixels))):
        assert reduced.dtype == np.float32 and (reduced * full).sum(1).min() > 0.999
        assert not np.array_equal(reduced, full)  # quantized: close, not the same computation


def test_embeddings_are_unit_float32(encoder, offline_catalog):
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(offline_catalog / "images" / f"{i}.jpg").convert("RGB").resize((96, 96)))
                       for i in ("10438", "10127")])
    images, texts = encoder.encode_images(pixels), encoder.encode_texts(["blue jeans", "casual shoes"])
    for out in (images, texts):
        assert out.dtype == np.float32 and out.shape == (2, encoder.dim)
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The real model aligns words with pictures: each caption is closer to its own photo.
    similarity = texts @ images.T
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 1] > similarity[1, 0]


def test_text_tower_trimmed_to_the_words_gives_the_full_context_vectors(encoder):
    """The padding after the end token is never read (causal mask, end-token pooling): running the tower on the
    words' tokens alone gives the vectors of the whole context, for a batch of mixed lengths and a full one."""
    import torch

    from retrieval.model import encode_trimmed, trims_padding

    texts = ["red", "blue jeans for men", "a long white cotton shirt with puffed sleeves and a collar " * 4]
    assert trims_padding(encoder.model)
    with torch.inference_mode():
        tokens = encoder.tokenizer(texts)
        full = torch.nn.functional.normalize(encoder.model.encode_text(tokens), dim=-1).numpy()
        trimmed = torch.nn.functional.normalize(encode_trimmed(encoder.model, tokens[:2]), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_texts(texts), full, atol=1e-5)
    np.testing.assert_allclose(trimmed, full[:2], atol=1e-5)


def test_a_text_projection_that_is_a_linear_module_works_in_fp32_and_int8(encoder, model_spec):
    """Some open_clip configs project the words with an nn.Linear, not a matrix; int8 packs it like any Linear."""
    import torch

    from retrieval.model import ClipEncoder, quantize_linears

    model = load_model(model_spec, device="cpu").model
    matrix = model.text_projection.detach()
    linear = torch.nn.Linear(*matrix.shape, bias=False)
    linear.weight.data = matrix.t().contiguous()
    del model.text_projection
    model.text_projection = linear
    reference = encoder.encode_texts(["blue jeans", "red dress"])
    for precision in ("fp32", "int8"):  # quantize_linears works in place: fp32 first
        built = quantize_linears(model) if precision == "int8" else model
        for graphs in (False, True):
            words = ClipEncoder(built, encoder.tokenizer, spec=encoder.spec, device="cpu", precision=precision,
                                graphs=graphs)
            assert (words.text_graph is not None) == graphs
            vectors = words.encode_texts(["blue jeans", "red dress"])
            assert words.dim == encoder.dim and (vectors * reference).sum(1).min() > 0.999


def test_the_towers_as_graphs_give_the_eager_vectors(encoder, model_spec, offline_catalog):
    """TorchScript graphs of both towers (the default) compute what the eager towers do, for words of mixed lengths
    (the trimming inside the graph) and for photos."""
    from PIL import Image

    eager = load_model(model_spec, device="cpu", graphs=False)
    assert encoder.text_graph is not None and encoder.image_graph is not None
    assert eager.text_graph is None and eager.image_graph is None
    texts = ["red", "blue jeans for men", "white cotton shirt with puffed sleeves " * 6]
    for batch in (texts[:1], texts[:2], texts):
        np.testing.assert_allclose(encoder.encode_texts(batch), eager.encode_texts(batch), atol=1e-6)
    pixels = np.stack([np.asarray(Image.open(offline_catalog / "images" / f"{i}.jpg").convert("RGB").resize((96, 96)))
                       for i in ("10438", "10127", "10000")])
    np.testing.assert_allclose(encoder.encode_images(pixels), eager.encode_images(pixels), atol=1e-6)


def test_a_tower_torchscript_cannot_compile_runs_eagerly(encoder, model_spec, monkeypatch, caplog):
    """A tower TorchScript rejects (a timm or Hugging Face one, say) is logged and runs as before."""
    import torch

    def refuse(module):
        raise RuntimeError("unsupported construct")

    monkeypatch.setattr(torch.jit, "script", refuse)
    with caplog.at_level("INFO", logger="retrieval.graphs"):
        fallback = load_model(model_spec, device="cpu", graphs=True)
    assert fallback.text_graph is None and fallback.image_graph is None
    assert "runs eagerly: TorchScript cannot compile it (RuntimeError: unsupported construct)" in caplog.text
    np.testing.assert_allclose(fallback.encode_texts(["blue jeans"]), encoder.encode_texts(["blue jeans"]), atol=1e-6)


def test_a_graph_that_fails_on_its_first_run_leaves_the_tower_eager(encoder, model_spec, monkeypatch, caplog):
    """Compiled is not enough: a graph that fails when warmed at load is dropped there, not on a shopper's search."""
    from retrieval import graphs

    def broken(model):
        def run(pixels):
            raise RuntimeError("shape mismatch")
        return run

    monkeypatch.setattr(graphs, "scripted_image_tower", broken)
    with caplog.at_level("INFO", logger="retrieval.graphs"):
        fallback = load_model(model_spec, device="cpu", graphs=True)
    assert fallback.image_graph is None and fallback.text_graph is not None
    assert "visual tower runs eagerly: its graph failed on an example (RuntimeError: shape mismatch)" in caplog.text
    pixels = np.zeros((1, 96, 96, 3), dtype=np.uint8)
    np.testing.assert_allclose(fallback.encode_images(pixels), encoder.encode_images(pixels), atol=1e-6)
