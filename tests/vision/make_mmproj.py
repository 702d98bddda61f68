#!/usr/bin/env python3
"""Write a small Gemma-3-shaped vision projector (mmproj GGUF) for a text model.

No vision model ships in a package, so the test suite makes one: a SigLIP-style vision
tower (a patch embedding, learned positions, a few transformer blocks) and the Gemma 3
projector (average pooling, RMS norm, a linear map into the text model's embedding space),
with small random weights drawn from a fixed seed. Its image embeddings carry no meaning;
what it proves is the path: upload, content part, projector, embeddings in the text
model's batch, generated tokens. The projector's output width is read from the text model
(the bundled gemma-3-270m, or smollm2-135m, whose llama architecture takes the same
projector: llama.cpp checks only the width).

With --audio the file holds an audio encoder too, shaped as llama.cpp's `ultravox`
projector: a Whisper-style encoder (two 1-D convolutions over 80 mel bins, learned
positions, transformer blocks) and the Ultravox projector (frames stacked by 30, RMS norm,
SwiGLU, a linear map into the text model's width). llama.cpp feeds it 16 kHz mono audio in
30-second windows; each started window is 50 tokens. Both encoders in one file is how
llama.cpp's omni models ship (`clip.vision.projector_type` and `clip.audio.projector_type`).

Usage: make_mmproj.py [--audio] TEXT_MODEL.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf

VISION_EMBD = 64  # width of the vision tower
VISION_FF = 128
VISION_LAYERS = 2
VISION_HEADS = 4
IMAGE_SIZE = 64  # pixels per side after resizing
PATCH = 8  # 8x8 patches per side ...
MERGE = 2  # ... pooled 2x2, so an image is 4x4 = 16 tokens
SEED = 20261121
AUDIO_EMBD = 64  # width of the audio encoder
AUDIO_FF = 128
AUDIO_LAYERS = 2
AUDIO_HEADS = 4
MEL_BINS = 80
AUDIO_POSITIONS = 1500  # frames of a 30-second window after the strided convolution
STACK = 30  # frames stacked into one token: a window's 1500 frames make 50 tokens
AUDIO_HIDDEN = 256  # the projector's first layer; SwiGLU halves it


def text_width(path: str) -> int:
    """The text model's embedding width, which the projector's output must have."""
    reader = gguf.GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{arch}.embedding_length"].parts[-1][0])


def main() -> None:
    args = sys.argv[1:]
    audio = "--audio" in args
    args = [a for a in args if a != "--audio"]
    if len(args) != 2:
        raise SystemExit(__doc__)
    text_model, out = args
    n_text = text_width(text_model)
    rng = np.random.default_rng(SEED)
    d, f = VISION_EMBD, VISION_FF

    def normal(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = gguf.GGUFWriter(out, "clip")
    if audio:
        w.add_string("general.name", "localgem test vision and audio projector (random weights)")
        w.add_string("clip.vision.projector_type", "gemma3")
    else:
        w.add_string("general.name", "localgem test vision projector (random weights)")
        w.add_string("clip.projector_type", "gemma3")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", d)
    w.add_uint32("clip.vision.feed_forward_length", f)
    w.add_uint32("clip.vision.block_count", VISION_LAYERS)
    w.add_uint32("clip.vision.attention.head_count", VISION_HEADS)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.projection_dim", n_text)
    w.add_uint32("clip.vision.projector.scale_factor", MERGE)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    n_patches = (IMAGE_SIZE // PATCH) ** 2
    # numpy shapes are ggml's dimensions reversed
    w.add_tensor("v.patch_embd.weight", normal(d, 3, PATCH, PATCH, scale=0.05).astype(np.float16))
    w.add_tensor("v.patch_embd.bias", np.zeros(d, np.float32))
    w.add_tensor("v.position_embd.weight", normal(n_patches, d, scale=0.02))
    for i in range(VISION_LAYERS):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{p}.{name}.weight", normal(d, d, scale=d ** -0.5))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(d, np.float32))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"{p}.{name}.weight", np.ones(d, np.float32))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(d, np.float32))
        w.add_tensor(f"{p}.ffn_up.weight", normal(f, d, scale=d ** -0.5))
        w.add_tensor(f"{p}.ffn_up.bias", np.zeros(f, np.float32))
        w.add_tensor(f"{p}.ffn_down.weight", normal(d, f, scale=f ** -0.5))
        w.add_tensor(f"{p}.ffn_down.bias", np.zeros(d, np.float32))
    w.add_tensor("v.post_ln.weight", np.ones(d, np.float32))
    w.add_tensor("v.post_ln.bias", np.zeros(d, np.float32))
    w.add_tensor("mm.soft_emb_norm.weight", np.ones(d, np.float32))
    # Scaled so an image token's embedding is about as large as a text token's.
    w.add_tensor("mm.input_projection.weight", normal(d, n_text, scale=0.03))
    if audio:
        add_audio(w, normal, n_text)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    also = ", 50 tokens per 30 s of audio" if audio else ""
    print(f"wrote {out}: {n_patches // MERGE ** 2} tokens per image{also}, width {n_text}")


def add_audio(w, normal, n_text: int) -> None:
    """The Ultravox-shaped audio encoder (after the vision one, so that the vision weights
    drawn from the seed stay the same)."""
    d, f = AUDIO_EMBD, AUDIO_FF
    w.add_string("clip.audio.projector_type", "ultravox")
    w.add_bool("clip.has_audio_encoder", True)
    w.add_uint32("clip.audio.embedding_length", d)
    w.add_uint32("clip.audio.feed_forward_length", f)
    w.add_uint32("clip.audio.block_count", AUDIO_LAYERS)
    w.add_uint32("clip.audio.attention.head_count", AUDIO_HEADS)
    w.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("clip.audio.projection_dim", n_text)
    w.add_uint32("clip.audio.num_mel_bins", MEL_BINS)
    w.add_uint32("clip.audio.projector.stack_factor", STACK)
    # The convolution biases are 2-D (channels, 1): the convolution's output is
    # (time, channels) and a 1-D bias would not broadcast.
    w.add_tensor("a.conv1d.1.weight", normal(d, MEL_BINS, 3, scale=0.05).astype(np.float16))
    w.add_tensor("a.conv1d.1.bias", np.zeros((d, 1), np.float32))
    w.add_tensor("a.conv1d.2.weight", normal(d, d, 3, scale=0.05).astype(np.float16))
    w.add_tensor("a.conv1d.2.bias", np.zeros((d, 1), np.float32))
    w.add_tensor("a.position_embd.weight", normal(AUDIO_POSITIONS, d, scale=0.02))
    for i in range(AUDIO_LAYERS):
        p = f"a.blk.{i}"
        for name in ("ln1", "ln2"):
            w.add_tensor(f"{p}.{name}.weight", np.ones(d, np.float32))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(d, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{p}.{name}.weight", normal(d, d, scale=d ** -0.5))
            if name != "attn_k":  # Whisper's key projection has no bias
                w.add_tensor(f"{p}.{name}.bias", np.zeros(d, np.float32))
        w.add_tensor(f"{p}.ffn_up.weight", normal(f, d, scale=d ** -0.5))
        w.add_tensor(f"{p}.ffn_up.bias", np.zeros(f, np.float32))
        w.add_tensor(f"{p}.ffn_down.weight", normal(d, f, scale=f ** -0.5))
        w.add_tensor(f"{p}.ffn_down.bias", np.zeros(d, np.float32))
    w.add_tensor("a.post_ln.weight", np.ones(d, np.float32))
    w.add_tensor("a.post_ln.bias", np.zeros(d, np.float32))
    h = AUDIO_HIDDEN
    w.add_tensor("mm.a.norm_pre.weight", np.ones(d * STACK, np.float32))
    w.add_tensor("mm.a.mlp.1.weight", normal(h, d * STACK, scale=(d * STACK) ** -0.5))
    w.add_tensor("mm.a.norm_mid.weight", np.ones(h // 2, np.float32))
    w.add_tensor("mm.a.mlp.2.weight", normal(n_text, h // 2, scale=0.03))


if __name__ == "__main__":
    main()
