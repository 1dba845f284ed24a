"""The DiT and SiT adapters on tiny random networks built in code and loaded from folders/files.

DiT: our Euler loop reproduces ``DiTPipeline.__call__`` (DDIM) from the same seeded noise, with and
without guidance; a batch row equals the candidate alone; the driver's NFEs equal the transformer's
rows. SiT: an original-layout checkpoint loads through the key mapping and the adapter's network
equals an independent implementation of the original forward; pickles need ``allow_pickle``; Heun
runs through the driver. Both: bad targets give one clear ``UserError``; a CLI run end to end.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from noisesearch.algorithms import ALGORITHMS
from noisesearch.cli import app
from noisesearch.driver import run_search
from noisesearch.errors import UserError
from noisesearch.models import MODELS
from noisesearch.models.base import Model
from noisesearch.samplers import sample_euler

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_pipelines as tiny  # noqa: E402
from _tiny_verifiers import Brightness, register_verifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    return tiny.save_dit(tmp_path_factory.mktemp("dit") / "pipe")


@pytest.fixture(scope="module")
def dit(dit_folder):
    return MODELS["dit"](path=dit_folder)


@pytest.fixture(scope="module")
def sit_files(tmp_path_factory):
    return tiny.save_sit(tmp_path_factory.mktemp("sit"))


@pytest.fixture(scope="module")
def sit(sit_files):
    return MODELS["sit"](path=sit_files["checkpoint"], config=sit_files["config"], vae_path=sit_files["vae"])


def our_run(model, x, cond, sigmas, guidance):
    return sample_euler(lambda x, s: model.denoise(x, s, cond, guidance=guidance), x, sigmas)


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_dit_reproduces_the_pipeline(dit, guidance):
    labels, steps = [207, 3], 3
    generator = torch.Generator().manual_seed(5)
    reference = dit.pipe(
        labels, guidance_scale=guidance, generator=generator, num_inference_steps=steps, output_type="pt"
    ).images  # (2, 3, 16, 16)
    z = torch.randn(2, *dit.noise_shape, generator=torch.Generator().manual_seed(5))  # the pipeline's draw
    sigmas = dit.schedule(steps)
    x = our_run(dit, z * dit.start_scale(sigmas[0]), dit.encode(labels), sigmas, guidance)
    images = dit.decode(x)
    assert isinstance(dit, Model) and images.shape == reference.shape == (2, 3, 16, 16)
    assert (images - reference).abs().max() < 1e-4


@pytest.mark.numerics
def test_dit_batch_row_equals_candidate_alone(dit):
    sigmas = dit.schedule(2)
    x = torch.randn(3, *dit.noise_shape, generator=torch.Generator().manual_seed(1))
    batch = our_run(dit, x, dit.encode([1, 2, 1]), sigmas, 4.0)
    alone = our_run(dit, x[1:2], dit.encode([2]), sigmas, 4.0)
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(our_run(dit, x[:1], dit.encode([2]), sigmas, 4.0), batch[:1])  # the class matters


@pytest.mark.parametrize("guidance,per_call", [(4.0, 2), (1.0, 1)])
def test_nfes_equal_transformer_rows(dit, sit, guidance, per_call):
    assert dit.domain == MODELS["dit"].domain == "rgb" and sit.domain == MODELS["sit"].domain == "rgb"
    for model, sampler in ((dit, "euler"), (sit, "heun")):
        rows = []
        hook = model.net.register_forward_pre_hook(
            lambda module, args, kwargs: rows.append(len(args[0] if args else kwargs["hidden_states"])),  # noqa: B023 (hook removed in this loop)
            with_kwargs=True,
        )
        try:
            (result,) = run_search(
                model,
                Brightness(),
                ALGORITHMS["random"](),
                ["207"],
                seeds=[0],
                budget=24,
                steps=2,
                sampler=sampler,
                guidance=guidance,
                max_batch=4,
            )
        finally:
            hook.remove()
        per_candidate = {"euler": 2, "heun": 3}[sampler] * per_call
        assert result.nfe_used == sum(rows) == len(result.candidates) * per_candidate
        assert result.best_image.shape == (3, 16, 16) and torch.isfinite(result.best_image).all()


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """The original DiT/MAE fixed position table (T, dim), written from its definition."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    halves = []
    for pos in (cols.reshape(-1), rows.reshape(-1)):  # the first half encodes the column (w) coordinate
        out = pos[:, None] * omega[None]  # (T, dim/4)
        halves.append(torch.cat([out.sin(), out.cos()], dim=1))
    return torch.cat(halves, dim=1).float()  # (T, dim)


def original_forward(state, x, t, y, *, heads: int, patch: int, layers: int) -> torch.Tensor:
    """The original DiT/SiT forward (velocity half) over an original-layout state dict: an independent check."""
    lin = lambda h, name: F.linear(h, state[f"{name}.weight"], state[f"{name}.bias"])  # noqa: E731
    norm = lambda h, shift, scale: F.layer_norm(h, h.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]  # noqa: E731,E501
    h = F.conv2d(x, state["x_embedder.proj.weight"], state["x_embedder.proj.bias"], stride=patch)  # (B, D, g, g)
    b, d, g, _ = h.shape
    h = h.flatten(2).transpose(1, 2) + sincos_2d(d, g)  # (B, T, D)
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)  # (128,)
    args = t[:, None].float() * freqs[None]
    c = lin(F.silu(lin(torch.cat([args.cos(), args.sin()], dim=1), "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = c + state["y_embedder.embedding_table.weight"][y]  # (B, D)
    for n in range(layers):
        s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp = lin(F.silu(c), f"blocks.{n}.adaLN_modulation.1").chunk(6, dim=1)
        qkv = lin(norm(h, s_msa, sc_msa), f"blocks.{n}.attn.qkv").reshape(b, -1, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, T, dh) each
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d)  # (B, T, D)
        h = h + g_msa[:, None] * lin(a, f"blocks.{n}.attn.proj")
        m = lin(F.gelu(lin(norm(h, s_mlp, sc_mlp), f"blocks.{n}.mlp.fc1"), approximate="tanh"), f"blocks.{n}.mlp.fc2")
        h = h + g_mlp[:, None] * m
    shift, scale = lin(F.silu(c), "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    h = lin(norm(h, shift, scale), "final_layer.linear")  # (B, T, p*p*C_out)
    h = h.reshape(b, g, g, patch, patch, -1).permute(0, 5, 1, 3, 2, 4)  # (B, C_out, g, p, g, p)
    out = h.reshape(b, -1, g * patch, g * patch)
    return out[:, : x.shape[1]]  # the velocity half of a learned-sigma output


def test_sit_key_mapping_and_original_forward(sit, sit_files):
    from noisesearch.models.dit import from_original, to_original

    net, state = sit_files["net"], sit_files["state"]
    layers = net.config.num_layers
    assert to_original(from_original(state, layers), layers).keys() == state.keys() - {"pos_embed"}
    loaded = sit.net.state_dict()
    assert loaded.keys() == net.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    x = torch.randn(3, *sit.noise_shape, generator=torch.Generator().manual_seed(2))
    t, y = torch.tensor([0.0, 0.3, 0.9]), torch.tensor([207, 5, 1000])
    ours = sit.net(x, timestep=t, class_labels=y, return_dict=False)[0][:, :4]
    reference = original_forward(state, x, t, y, heads=2, patch=2, layers=layers)
    assert (ours - reference).abs().max() < 1e-5


def test_sit_velocity_convention(sit):
    x = torch.randn(2, *sit.noise_shape, generator=torch.Generator().manual_seed(3))
    cond, sigma = sit.encode([1, 2]), 0.25
    v = sit.net(x, timestep=torch.full((2,), 0.75), class_labels=cond, return_dict=False)[0][:, :4]
    # default float32 tolerance: the same formula evaluated in another order
    torch.testing.assert_close(sit.denoise(x, sigma, cond, guidance=1.0), x + sigma * v)
    assert sit.schedule(4) == (1.0, 0.75, 0.5, 0.25, 0.0)


def test_sit_pickle_needs_allow_pickle(sit_files, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(sit_files["checkpoint"]))
    pt = tmp_path / "sit.pt"
    torch.save(state, pt)
    options = dict(config=sit_files["config"], vae_path=sit_files["vae"])
    with pytest.raises(UserError, match=r"is a pickle file; pass --model-param allow_pickle=true"):
        MODELS["sit"](path=pt, **options)
    model = MODELS["sit"](path=pt, allow_pickle=True, **options)
    assert all(
        torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), sit_files["net"].state_dict().values())
    )
    torch.save({"ema": state, "opt": {}}, tmp_path / "train.pt")  # a training checkpoint: the EMA weights are used
    assert MODELS["sit"](path=tmp_path / "train.pt", allow_pickle=True, **options).net.config.num_layers == 2


@pytest.mark.parametrize("bad", [1000, -1, "cat", "2.5", True, None, 3.0])
def test_bad_targets(dit, sit, bad):
    for model in (dit, sit):
        with pytest.raises(UserError, match=r"is not an ImageNet class id; accepted: integers 0 to 999"):
            model.encode([bad])
    assert dit.encode(["207", 3]).tolist() == [207, 3]


def test_sit_bad_inputs(sit_files, tmp_path):
    options = dict(vae_path=sit_files["vae"])
    with pytest.raises(UserError, match="model 'sit' needs --model-path"):
        MODELS["sit"](**options)
    with pytest.raises(UserError, match="is not a file"):
        MODELS["sit"](path=tmp_path / "missing.safetensors", **options)
    with pytest.raises(UserError, match="does not fit the SiT config"):
        MODELS["sit"](path=sit_files["checkpoint"], **options)  # SiT-XL/2 defaults vs a tiny checkpoint


runner = CliRunner()


def test_cli_generate_dit_end_to_end(dit_folder, tmp_path, monkeypatch):
    register_verifier(monkeypatch, "brightness", Brightness)
    out = tmp_path / "out"
    args = [
        "generate",
        "--model",
        "dit",
        "--model-path",
        str(dit_folder),
        "--target",
        "207",
        "--verifier",
        "brightness",
        "--budget",
        "8",
        "--steps",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert (out / "best.png").is_file() and record["nfe_used"] == 8 and len(record["candidates"]) == 2
    assert record["target"] == 207 and record["guidance"] == 4.0
