"""diffusers' unconditional training loop (examples/unconditional_image_generation/train_unconditional.py,
reduced to its core) with E-TSDM added: the two lines marked ``# E-TSDM`` (the third line of the
README's recipe is ``import etsdm`` before loading the saved folder with diffusers).

    python examples/train_unconditional_etsdm.py --output_dir ddpm-digits-etsdm --max_train_steps 2000

Data: scikit-learn's 8x8 handwritten digits (no download), scaled to [-1, 1] and resized to
``--resolution``. The result is a DDPMPipeline folder; load it back with

    import etsdm
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("ddpm-digits-etsdm")

Nothing else changes: the loop still draws t uniformly, noises with the scheduler and regresses
the noise; the wrapped UNet feeds its network f_T(t) (Eq. 9) in training and in the pipeline.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from sklearn.datasets import load_digits

import etsdm  # E-TSDM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="ddpm-digits-etsdm")
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--train_batch_size", type=int, default=64)
    p.add_argument("--max_train_steps", type=int, default=2000)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--ddpm_num_steps", type=int, default=1000)
    p.add_argument("--ddpm_beta_schedule", default="linear")
    p.add_argument("--ddpm_num_inference_steps", type=int, default=1000)
    p.add_argument("--etsdm_t_tilde", type=int, default=100, help="E-TSDM t̃ (timesteps), default T/10")
    p.add_argument("--etsdm_n", type=int, default=5, help="E-TSDM number of sub-intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a very small UNet (smoke tests)")
    return p.parse_args(argv)


def digits(resolution: int) -> torch.Tensor:
    x = torch.from_numpy(load_digits().images.astype(np.float32) / 8.0 - 1.0)[:, None]  # [-1, 1]
    return F.interpolate(x, size=resolution, mode="bilinear", align_corners=False) if resolution != 8 else x


def make_unet(resolution: int, tiny: bool) -> UNet2DModel:
    channels = (16, 16) if tiny else (64, 128)
    return UNet2DModel(sample_size=resolution, in_channels=1, out_channels=1, layers_per_block=1 if tiny else 2,
                       block_out_channels=channels, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    data = digits(args.resolution)
    model = make_unet(args.resolution, args.tiny)
    # E-TSDM: f_T in training and sampling; wrap before building the optimiser (same parameters anyway)
    model = etsdm.share_timesteps(model, t_tilde=args.etsdm_t_tilde, n=args.etsdm_n, T=args.ddpm_num_steps)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    losses = []
    model.train()
    for step in range(args.max_train_steps):
        clean_images = data[torch.randint(0, len(data), (args.train_batch_size,))]
        noise = torch.randn_like(clean_images)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],)).long()
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        model_output = model(noisy_images, timesteps).sample  # the UNet sees f_T(timesteps)
        loss = F.mse_loss(model_output.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f}")
    model.eval()
    pipeline = DDPMPipeline(unet=model, scheduler=noise_scheduler)  # sampling sees f_T(t) too
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(args.output_dir)
    images = pipeline(batch_size=4, generator=torch.Generator().manual_seed(args.seed),
                      num_inference_steps=args.ddpm_num_inference_steps, output_type="np").images
    print(f"saved {args.output_dir}; sample range [{images.min():.2f}, {images.max():.2f}]")
    return losses


if __name__ == "__main__":
    main()
