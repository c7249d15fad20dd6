"""label_ldm training steps in fp32, bf16 autocast, and bf16 + channels-last 3D, measured in one run on the bundle's
own networks, losses and batch shapes (configs/common.yaml + train_autoencoder.yaml / train_diffusion.yaml), through
the paths the configs take: the autoencoder's `AutoencoderStep` (discriminator on, as after `adv_start`) and the
diffusion UNet behind brainspade.precision's AutocastInferer around MONAI's DiffusionInferer. Prints and stores the
ratios the `bf16: auto` and `channels_last` defaults rest on.

    python benchmarks/label_ldm_precision.py [--threads 2] [--steps 4]
    python benchmarks/label_ldm_precision.py --quick     # smoke test: the tiny overlay, 1 step

Writes benchmarks/results/label_ldm_precision.json (or --output).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from _bundle_run import mean_step_seconds

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / "bundles" / "label_ldm"
CONFIGS = BUNDLE / "configs"
MODES = {"fp32": (False, False), "bf16": (True, False), "bf16_channels_last": (True, True)}


def _parser(stage: str, quick: bool):
    from monai.bundle import ConfigParser

    files = [CONFIGS / "common.yaml", CONFIGS / f"train_{stage}.yaml"] + ([CONFIGS / "tiny.yaml"] if quick else [])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(BUNDLE), "device": "$torch.device('cpu')"})
    return parser


def _fresh(parser, key: str, state: dict, channels_last: bool):
    """A new network of config id `key` with the weights `state` (every mode starts from the same weights)."""
    from brainspade.precision import to_channels_last

    net = parser.get_parsed_content(key, instantiate=True, lazy=False)
    net.load_state_dict(state)
    return to_channels_last(net, channels_last)


def autoencoder_steps(steps: int, quick: bool) -> dict:
    """AutoencoderStep (reconstruction + KL + generator and discriminator PatchGAN passes) on the training batch:
    `patches_per_subject` x `batch_size` patches of `roi_size`."""
    import torch

    p = _parser("autoencoder", quick)
    scripts = p.get_parsed_content("scripts")
    n = int(p.get_parsed_content("patches_per_subject")) * int(p.get_parsed_content("batch_size"))
    roi = list(p.get_parsed_content("roi_size"))
    torch.manual_seed(0)
    pv = torch.softmax(4 * torch.randn(n, int(p.get_parsed_content("num_labels")), *roi), 1)
    ae_state = p.get_parsed_content("autoencoder_def").state_dict()
    d_state = p.get_parsed_content("discriminator_def").state_dict()
    out: dict = {"batch": n, "patch": roi}
    for mode, (bf16, cl) in MODES.items():
        ae, disc = _fresh(p, "autoencoder_def", ae_state, cl), _fresh(p, "discriminator_def", d_state, cl)
        step = scripts.AutoencoderStep(
            disc,
            torch.optim.Adam(disc.parameters(), 1e-4),
            p.get_parsed_content("recon_loss"),
            p.get_parsed_content("adv_loss"),
            adv_start=0,
            bf16=bf16,
            channels_last=cl,
        )
        engine = types.SimpleNamespace(
            network=ae, optimizer=torch.optim.Adam(ae.parameters(), 1e-4), non_blocking=False
        )
        engine.state = types.SimpleNamespace(device="cpu", iteration=1)
        out[mode] = {"train_step_s": round(mean_step_seconds(lambda e=engine, s=step: s(e, {"pv": pv}), steps), 4)}
    return out


def diffusion_steps(steps: int, quick: bool) -> dict:
    """One UNet training step (v-prediction MSE, AdamW) on a batch of `batch_size` latents of the profile."""
    import torch
    from monai.inferers import DiffusionInferer

    from brainspade.precision import AutocastInferer

    p = _parser("diffusion", quick)
    b = int(p.get_parsed_content("batch_size"))
    shape = list(p.get_parsed_content("latent_shape"))
    sched = p.get_parsed_content("noise_scheduler")
    torch.manual_seed(0)
    z, noise = torch.randn(b, *shape), torch.randn(b, *shape)
    t = torch.randint(0, int(p.get_parsed_content("num_train_timesteps")), (b,))
    cond = torch.rand(b, 1, int(p.get_parsed_content("num_conditions")))
    target = sched.get_velocity(z, noise, t)
    state = p.get_parsed_content("network_def").state_dict()
    out: dict = {"batch": b, "latent": shape}
    for mode, (bf16, cl) in MODES.items():
        net = _fresh(p, "network_def", state, cl)
        opt = torch.optim.AdamW(net.parameters(), 1e-4)
        inferer = AutocastInferer(DiffusionInferer(sched), enabled=bf16, channels_last=cl)

        def step(net=net, opt=opt, inferer=inferer) -> None:
            opt.zero_grad(set_to_none=True)
            pred = inferer(z, net, noise, t, condition=cond)  # as SupervisedTrainer calls it
            torch.nn.functional.mse_loss(pred.float(), target).backward()
            opt.step()

        out[mode] = {"train_step_s": round(mean_step_seconds(step, steps), 4)}
    return out


def _speedups(res: dict) -> None:
    for mode in ("bf16", "bf16_channels_last"):
        res[f"speedup_{mode}"] = round(res["fp32"]["train_step_s"] / res[mode]["train_step_s"], 2)


def main(argv: list[str] | None = None) -> dict:

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bundle_run import machine, step_timing_args, write_result

    from brainspade.precision import bf16_pays

    a = step_timing_args(__doc__, 4, "the tiny overlay, 1 step (smoke test)", argv)
    steps = 1 if a.quick else a.steps
    res = {"benchmark": "label_ldm_precision", "threads": a.threads, "steps": steps, "quick": bool(a.quick)}
    res["bf16_native"] = bf16_pays("cpu")
    for name, fn in (("diffusion_unet", diffusion_steps), ("autoencoder", autoencoder_steps)):
        res[name] = fn(steps, a.quick)
        _speedups(res[name])
        print(name, res[name], flush=True)
    res["machine"] = machine()
    write_result("label_ldm_precision", "tiny" if a.quick else "default", res, a.output)
    return res


if __name__ == "__main__":
    main()
