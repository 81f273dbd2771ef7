"""Build a tiny, randomly initialised LLaVA-1.5-architecture model in a folder, with no download.

Runs in the vLLM venv (it needs torch, transformers and tokenizers, not vlmparity):

    HF_HUB_OFFLINE=1 python tests/realengine/build_tiny_llava.py OUT_DIR [--check] [--no-chat-template]

The recipe and why each choice matters (head_dim 32, the `vision_tower.vision_model.*` key layout, the
printable-ASCII byte-level BPE) are in ../shared/research/real-vllm.md §A. The output is deterministic
(seed 0): vLLM answers the same meaningless text every time at temperature 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 0
HIDDEN = 64
HEADS = (
    2  # head_dim = 64 / 2 = 32: one of vLLM's CPU attention sizes (16 kills the engine at the first request)
)
LAYERS = 2
IMAGE_SIZE = 224
PATCH = 14  # (224 / 14)^2 = 256 image tokens per image with the "default" feature strategy (CLS dropped)
VOCAB = 267
MAX_POSITIONS = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]  # ids 0..4, in this order
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TEMPLATE = (
    Path(__file__).resolve().parents[2] / "src" / "vlmparity" / "launch" / "templates" / "llava-1.5.jinja"
)

# Training text for the BPE: printable ASCII only, enough of it to reach VOCAB tokens.
CORPUS = [
    "What is in this image? Answer the question using a single word or phrase.",
    "Is there a dog in the image? Please answer yes or no.",
    "Is the cat on the left side of the picture? Please answer yes or no.",
    "Answer with the option's letter from the given choices directly.",
    "A photo of a red car parked next to a tall building on a sunny day.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "How many people are standing in the room? There are three people.",
    "Which city is shown in this picture? It looks like a large harbour town.",
    "Describe the chart: the blue line rises while the orange bars stay flat.",
    "Question: what colour is the sky? Options: (A) blue (B) green (C) red (D) yellow.",
    "USER: <image>\nWhat is shown here? ASSISTANT: a small house with a garden.",
    "Reading the text in the image: OPEN 24 HOURS, 123 Main Street, tel. 555-0199.",
    "The painting shows a landscape with mountains, trees, water and a small boat.",
    "Counting objects: one, two, three, four, five, six, seven, eight, nine, ten.",
]


def byte_level_printable_alphabet() -> list[str]:
    """Printable ASCII as the byte-level BPE writes it: '!'..'~' map to themselves, space is 'Ġ', newline 'Ċ'."""
    return [chr(c) for c in range(33, 127)] + ["\u0120", "\u010a"]


def train_tokenizer():  # type: ignore[no-untyped-def]
    """A byte-level BPE trained in-process on CORPUS, wrapped as a fast tokenizer that adds BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=byte_level_printable_alphabet(),
        limit_alphabet=len(byte_level_printable_alphabet()),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    for i, name in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(name) != i:
            raise SystemExit(f"special token {name!r} got id {tok.token_to_id(name)}, expected {i}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )


def build_model(vocab_size: int):  # type: ignore[no-untyped-def]
    """The LLaVA-1.5 architecture at toy size, randomly initialised from SEED."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=HIDDEN,
    )
    text = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HIDDEN // HEADS,
        vocab_size=vocab_size,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=SPECIAL_TOKENS.index("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    return model


def build_processor(tokenizer, with_template: bool):  # type: ignore[no-untyped-def]
    """CLIP preprocessing at 224 px plus the tokenizer (and the llava-1.5 chat template unless told not to)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        resample=3,  # bicubic, as CLIP
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )
    template = TEMPLATE.read_text(encoding="utf-8") if with_template else None
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token that "default" drops
        image_token="<image>",
        chat_template=template,
    )


def rename_vision_keys(folder: Path) -> int:
    """Rewrite `vision_tower.X` as `vision_tower.vision_model.X` (the llava-hf layout vLLM 0.32 loads)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    renamed: dict[str, object] = {}
    count = 0
    for key, value in tensors.items():
        head, sep, rest = key.partition("vision_tower.")
        if sep and not rest.startswith("vision_model."):
            key = f"{head}vision_tower.vision_model.{rest}"
            count += 1
        renamed[key] = value
    save_file(renamed, str(path), metadata={"format": "pt"})  # type: ignore[arg-type]
    return count


def check(folder: Path) -> None:
    """Reload the folder with transformers, compare weights with a fresh build, and greedy-generate 8 tokens."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    fresh = build_model(len(processor.tokenizer)).state_dict()
    loaded = model.state_dict()
    mismatched = [k for k, v in fresh.items() if k not in loaded or not torch.equal(v, loaded[k])]
    if mismatched:
        raise SystemExit(f"reloaded weights differ from a fresh build: {mismatched[:5]}")
    rng = np.random.default_rng(SEED)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"prompt {prompt!r} ({inputs['input_ids'].shape[1]} tokens)\ngeneration {text!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created; existing files are overwritten)")
    parser.add_argument("--check", action="store_true", help="reload with transformers and generate once")
    parser.add_argument(
        "--no-chat-template",
        action="store_true",
        help="save no chat template (to test launchers that add one)",
    )
    args = parser.parse_args(argv)

    tokenizer = train_tokenizer()
    if len(tokenizer) != VOCAB:
        raise SystemExit(f"tokenizer has {len(tokenizer)} tokens, expected {VOCAB}: extend CORPUS")
    model = build_model(len(tokenizer))
    processor = build_processor(tokenizer, with_template=not args.no_chat_template)
    args.out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(args.out)
    model.save_pretrained(args.out, safe_serialization=True)
    renamed = rename_vision_keys(args.out)
    files = sorted(p.name for p in args.out.iterdir())
    print(f"built {args.out}: {renamed} vision keys renamed; files: {' '.join(files)}")
    if args.check:
        check(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
