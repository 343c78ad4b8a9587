"""Registry of the supported models: ``family:variant`` -> ModelSpec (``deploykit.zoo.spec``).

Each family is declared once (:func:`register_family`) and each variant registered on its own (:func:`register`),
the way timm registers one entry point per variant. Constructor keyword arguments per variant are the released
configurations (the official YAMLs / test scripts), recorded in ``../shared/reference/architectures.md``. Adding a
model: its architecture file in ``models_src/``, a family and its variants here.
"""

from __future__ import annotations

from deploykit.errors import UnknownModelError
from deploykit.zoo.spec import (
    CheckpointFormat,
    Family,
    Fp16Policy,
    ModelSpec,
    TensorSpec,
)

_IMAGE = TensorSpec("image", 3, "RGB, float 0..1, NCHW")
_OUT = TensorSpec("output", 3, "RGB, float 0..1 (not clamped)")
_REG: dict[str, Family] = {}


def register_family(name: str, description: str, task: str, default: str) -> None:
    """Declare a model family; its variants follow, one :func:`register` each."""
    if name in _REG:
        raise ValueError(f"model family {name!r} is registered twice")
    _REG[name] = Family(name, description, task, default, {})


def register(spec: ModelSpec) -> ModelSpec:
    """Register one variant (timm's ``@register_model``: one entry point per variant) under its declared family."""
    family = _REG.get(spec.family)
    if family is None:
        raise ValueError(f"register_family({spec.family!r}, ...) must come before its variant {spec.name}")
    if spec.variant in family.variants:
        raise ValueError(f"{spec.name} is registered twice")
    family.variants[spec.variant] = spec
    return spec


# --- MIRNet-v2 (swz30/MIRNetv2) -------------------------------------------------------------------
_MIRNETV2_FP16 = Fp16Policy(
    keep_fp32_ops=("Softmax", "ReduceSum", "ReduceMean", "GlobalAveragePool"),
    notes="Context-block softmax over H*W and SKFF pooling are reductions over the whole image; kept FP32.",
)


def _mirnetv2(variant: str, task: str, kwargs: dict | None = None, **extra) -> ModelSpec:
    return ModelSpec(
        family="mirnetv2", variant=variant, task=task, builder="mirnet_v2:MIRNet_v2",
        kwargs=kwargs or {}, params=extra.pop("params", 5_858_560),
        inputs=extra.pop("inputs", (_IMAGE,)), outputs=(_OUT,), multiple_of=4, min_size=4,
        checkpoint=CheckpointFormat(keys=("params",), notes="{'params': state_dict}, no module. prefix"),
        fp16=_MIRNETV2_FP16, source="swz30/MIRNetv2 basicsr/models/archs/mirnet_v2_arch.py", **extra,
    )


register_family("mirnetv2", "MIRNet-v2: multi-scale residual restoration (denoise, RealSR, enhance, defocus)",
                "denoise/RealSR/enhance/defocus", default="real_denoising")
register(_mirnetv2("real_denoising", "denoising (SIDD real noise)"))
register(_mirnetv2("sr_x2", "super-resolution x2 (RealSR, same-size: no upsampler)"))
register(_mirnetv2("sr_x3", "super-resolution x3 (RealSR, same-size: no upsampler)"))
register(_mirnetv2("sr_x4", "super-resolution x4 (RealSR, same-size: no upsampler)"))
register(_mirnetv2("enhancement_lol", "low-light enhancement (LOL)"))
register(_mirnetv2("enhancement_fivek", "contrast enhancement (MIT-Adobe FiveK)"))
register(_mirnetv2(
    "defocus_deblurring", "dual-pixel defocus deblurring (DPDD, 16-bit)",
    {"inp_channels": 6, "task": "defocus_deblurring"}, params=5_860_720,
    inputs=(TensorSpec("image", 6, "left and right dual-pixel views [L, R], /65535, NCHW"),),
    notes="No input-image residual; 16-bit PNGs divided by 65535.",
))

# --- MIRNet v1 (swz30/MIRNet) ---------------------------------------------------------------------
register_family("mirnet", "MIRNet (v1): multi-scale residual network with DAU attention and antialias downsampling",
                "denoise/RealSR/enhance", default="base")
register(ModelSpec(
    family="mirnet", variant="base",
    task="denoising / same-size RealSR x3,x4 / LOL / FiveK (one architecture for every release)",
    builder="mirnet:MIRNet", kwargs={}, params=31_787_419, inputs=(_IMAGE,), outputs=(_OUT,),
    multiple_of=4, min_size=4,
    checkpoint=CheckpointFormat(
        keys=("state_dict", "params"),
        notes="{'epoch','state_dict','optimizer'}, likely 'module.' prefix (stripped)"),
    fp16=Fp16Policy(keep_fp32_ops=("Softmax", "GlobalAveragePool", "ReduceMean"),
                    notes="SKFF softmax and attention pools kept FP32."),
    source="swz30/MIRNet networks/MIRNet_model.py",
    notes="DAUs applied twice and one PReLU shared by all DAUs (duplicated checkpoint keys).",
))

# --- MPRNet (swz30/MPRNet) ------------------------------------------------------------------------
_MPR_OUTS = (
    TensorSpec("output", 3, "stage-3 restored image (final)"),
    TensorSpec("stage2", 3, "stage-2 image"),
    TensorSpec("stage1", 3, "stage-1 image"),
)


def _mprnet(variant: str, task: str, feats: tuple[int, int, int], params: int) -> ModelSpec:
    n_feat, unet, ors = feats
    return ModelSpec(
        family="mprnet", variant=variant, task=task, builder="mprnet:MPRNet",
        kwargs={"n_feat": n_feat, "scale_unetfeats": unet, "scale_orsnetfeats": ors}, params=params,
        inputs=(_IMAGE,), outputs=_MPR_OUTS, image_output=0, multiple_of=8, min_size=8,
        checkpoint=CheckpointFormat(keys=("state_dict", "params"),
                                    notes="{'epoch','state_dict','optimizer'}, likely 'module.' prefix"),
        fp16=Fp16Policy(keep_fp32_ops=("GlobalAveragePool", "ReduceMean"),
                        notes="Channel-attention pools kept FP32."),
        source=f"swz30/MPRNet {variant.capitalize()}/MPRNet.py",
        notes="Forward returns [stage3, stage2, stage1]; output 0 is the image. The official int(H/2) split "
              "is replaced by a shape-generic form for export.",
    )


register_family("mprnet", "MPRNet: multi-stage progressive restoration (deblur, denoise, derain)",
                "deblur/denoise/derain", default="deblurring")
register(_mprnet("deblurring", "motion deblurring (GoPro)", (96, 48, 32), 20_127_073))
register(_mprnet("denoising", "real denoising (SIDD)", (80, 48, 32), 15_741_025))
register(_mprnet("deraining", "deraining (Rain13K)", (40, 20, 16), 3_637_249))

# --- UDVD with PixelConv (reference re-implementation, ../shared/reference/udvd.md) -----------------
# UDVD's PixelConv unfolds k*k x C full-resolution tensors: an arena keeps their regions, fragmented, across the
# graph; plain malloc hands each back when freed. 1024^2 one thread: 10,710 -> 8,365 MB (eager 7,110: 1.51 ->
# 1.18 x), 9-16 % slower (512^2: 19.8 -> 23.0 s first run); the shared arena is worse (11,987 MB)
# (benchmarks/results/<cpu>/ort_memory_udvd_{graph,arena}1024.json)
_NO_ARENA = "none"
register_family("udvd", "UDVD: unified dynamic convolution SR for variational degradations (PixelConv)",
                "SR of blurry noisy", default="x2")
register(ModelSpec(
    family="udvd", variant="x2", task="super-resolution x2 of blurred, noisy images",
    builder="udvd:UDVD", kwargs={}, params=4_835_999,
    inputs=(_IMAGE,
            TensorSpec("kernel", 15, "PCA code of the blur kernel (SRMD-style), constant per pixel"),
            TensorSpec("noise", 1, "noise level map (sigma / 255)")),
    outputs=(TensorSpec("output1", 3, "UpDyConv output"), TensorSpec("output2", 3, "ComDyConv1 output"),
             TensorSpec("output", 3, "final image (ComDyConv2)")),
    image_output=2, scale=2,
    checkpoint=CheckpointFormat(keys=("params", "state_dict"), notes="no official weights exist"),
    fp16=Fp16Policy(notes="PixelConv accumulates k*k products; checked by measurement."),
    source="reference re-implementation of arXiv 2004.06965 (../shared/reference/udvd.md)", ort_arena=_NO_ARENA,
))

# --- VapSR (zhoumumu/VapSR) -----------------------------------------------------------------------
_VAPSR_CKPT = CheckpointFormat(keys=("params_ema", "params"), notes="{'params','params_ema'}; params_ema used")
_VAPSR_FP16 = Fp16Policy(keep_fp32_ops=("LayerNormalization", "ReduceMean", "Pow", "Sqrt"),
                         notes="LayerNorm over channels kept FP32 (known FP16 drift in TensorRT).")


def _vapsr(variant: str, scale: int, feat: int, blocks: int, params: int, groups: int = 1) -> ModelSpec:
    return ModelSpec(
        family="vapsr", variant=variant, task=f"super-resolution x{scale}", builder="vapsr:vapsr",
        kwargs={"scale": scale, "num_feat": feat, "num_block": blocks, "d_atten": 64, "conv_groups": groups},
        params=params, inputs=(_IMAGE,), outputs=(_OUT,), scale=scale, checkpoint=_VAPSR_CKPT,
        fp16=_VAPSR_FP16, source="zhoumumu/VapSR code/vapsr.py",
    )


register_family("vapsr", "VapSR: vast-receptive-field pixel attention super-resolution",
                "SR", default="x4")
register(_vapsr("x2", 2, 48, 20, 329_236))
register(_vapsr("x3", 3, 48, 20, 336_811))
register(_vapsr("x4", 4, 48, 21, 342_220))
register(_vapsr("s_x4", 4, 32, 11, 154_956, groups=2))

# --- EDSR (BasicSR layout; original EDSR-PyTorch files remapped) ------------------------------------
# Single-scale SR nets (every tensor at one of two sizes): ONNX Runtime's shared same-as-requested arena holds
# 25-33 % less than the session's own power-of-two arena at 256^2 (EDSR 1,110 -> 764 MB, RCAN 1,111 -> 833, SRResNet
# 1,108 -> 745); the multi-scale nets fragment it instead (MPRNet 428 -> 674 MB) and keep theirs
# (benchmarks/results/<cpu>/ort_memory_<model>_arena.json).
_SAME_SIZE_ARENA = "shared"
_X255_FP16 = Fp16Policy(notes="Features live in the 0..255 range (mean shift x255); checked for overflow.")


def _edsr(size: str, scale: int, params: int) -> ModelSpec:
    feat, blocks, res = (64, 16, 1.0) if size == "m" else (256, 32, 0.1)
    return ModelSpec(
        family="edsr", variant=f"{size}_x{scale}",
        task=f"super-resolution x{scale} ({'baseline' if size == 'm' else 'large'})",
        builder="edsr:EDSR",
        kwargs={"num_feat": feat, "num_block": blocks, "upscale": scale, "res_scale": res},
        params=params, inputs=(_IMAGE,), outputs=(_OUT,), scale=scale,
        checkpoint=CheckpointFormat(keys=("params", "params_ema"), legacy=("edsr-pytorch",),
                                    notes="BasicSR {'params'}; original EDSR-PyTorch flat dicts remapped"),
        fp16=_X255_FP16, source="XPixelGroup/BasicSR basicsr/archs/edsr_arch.py", ort_arena=_SAME_SIZE_ARENA,
    )


register_family("edsr", "EDSR: enhanced deep residual super-resolution (baseline M and large L)",
                "SR", default="m_x4")
register(_edsr("m", 2, 1_369_859))
register(_edsr("m", 3, 1_554_499))
register(_edsr("m", 4, 1_517_571))
register(_edsr("l", 2, 40_729_603))
register(_edsr("l", 3, 43_680_003))
register(_edsr("l", 4, 43_089_923))

# --- RCAN (BasicSR layout; original yulunzhang/RCAN files remapped) ---------------------------------


def _rcan(scale: int, params: int) -> ModelSpec:
    return ModelSpec(
        family="rcan", variant=f"x{scale}", task=f"super-resolution x{scale}", builder="rcan:RCAN",
        kwargs={"num_block": 20, "num_group": 10, "upscale": scale}, params=params,
        inputs=(_IMAGE,), outputs=(_OUT,), scale=scale,
        checkpoint=CheckpointFormat(keys=("params", "params_ema"), legacy=("rcan",),
                                    notes="BasicSR {'params'}; original RCAN .pt flat dicts remapped"),
        fp16=Fp16Policy(keep_fp32_ops=("GlobalAveragePool", "ReduceMean"),
                        notes="Features in the 0..255 range; channel-attention pools kept FP32."),
        source="XPixelGroup/BasicSR basicsr/archs/rcan_arch.py (10 groups x 20 RCAB, the published model)",
        ort_arena=_SAME_SIZE_ARENA,
    )


register_family("rcan", "RCAN: residual channel attention super-resolution",
                "SR", default="x4")
register(_rcan(2, 15_444_643))
register(_rcan(3, 15_629_283))
register(_rcan(4, 15_592_355))
register(_rcan(8, 15_740_067))

# --- SRResNet (BasicSR MSRResNet) ------------------------------------------------------------------


def _srresnet(scale: int, params: int) -> ModelSpec:
    return ModelSpec(
        family="srresnet", variant=f"x{scale}", task=f"super-resolution x{scale}",
        builder="srresnet:MSRResNet", kwargs={"upscale": scale}, params=params,
        inputs=(_IMAGE,), outputs=(_OUT,), scale=scale,
        checkpoint=CheckpointFormat(keys=("params", "params_ema"),
                                    notes="BasicSR {'params', 'params_ema'}; the test config loads 'params'"),
        source="XPixelGroup/BasicSR basicsr/archs/srresnet_arch.py", ort_arena=_SAME_SIZE_ARENA,
    )


register_family("srresnet", "SRResNet (BasicSR MSRResNet): SRGAN generator without batch norm",
                "SR", default="x4")
register(_srresnet(2, 1_369_859))
register(_srresnet(3, 1_554_499))
register(_srresnet(4, 1_517_571))


# --- lookup ------------------------------------------------------------------------------------------

def families() -> dict[str, Family]:
    return dict(_REG)


def list_models() -> list[str]:
    """Every registered ``family:variant`` name."""
    return [s.name for fam in _REG.values() for s in fam.variants.values()]


def get_spec(name: str) -> ModelSpec:
    """Resolve ``family`` (default variant) or ``family:variant`` to its ModelSpec."""
    family, _, variant = name.strip().lower().partition(":")
    if family not in _REG:
        raise UnknownModelError(f"unknown model '{name}'; valid models: {', '.join(_REG)} "
                                f"(run 'deploykit list' for variants)")
    fam = _REG[family]
    variant = variant or fam.default
    if variant not in fam.variants:
        raise UnknownModelError(f"unknown variant '{variant}' of {family}; valid variants: "
                                f"{', '.join(fam.variants)}")
    return fam.variants[variant]


# --- PANet: PANET and PA-EDSR (SHI-Labs/Pyramid-Attention-Networks) ---------------------------------------
# Pyramid attention makes memory grow with (H*W)^2: the export is dynamic in H/W but sized for tiles of at most
# `tile` x `tile` (docs/panet.md), and the official results come from the recursive chop (deploykit.imaging.chop).
_PA_FP16 = Fp16Policy(
    keep_fp32_ops=("Pow", "ReduceSum", "Sqrt", "Max", "Div", "MatMul", "Softmax"),
    notes="Attention core (key norms, scores, softmax over ~3.3*H*W patches, reconstruction) kept FP32: a score "
          "error d shifts the softmax weights by ~10*d.")
_PA_CKPT = CheckpointFormat(keys=(), notes="flat state_dict from Model.save (no wrapper, no module. prefix); "
                                           "Google Drive only")
_PA_TILE = 112
_PA_TREES = {"dn": "DN_RGB", "car": "CAR", "demosaic": "Demosaic"}
_PA_NOTES = ("Attention memory ~ 3.3*(H*W)^2 floats per image: run tiles of at most {tile}x{tile} (export "
             "contract); the official numbers use forward_chop (shave 10, min_size {min_size}).")


def _panet(variant: str, task: str, colors: int, params: int, min_size: int, image: TensorSpec = _IMAGE,
           out: TensorSpec = _OUT) -> ModelSpec:
    return ModelSpec(
        family="panet", variant=variant, task=task, builder="panet:PANET",
        kwargs={"n_resblocks": 80, "n_feats": 64, "n_colors": colors, "rgb_range": 1, "res_scale": 1},
        params=params, inputs=(image,), outputs=(out,), min_size=2, checkpoint=_PA_CKPT, fp16=_PA_FP16,
        exporters=("legacy",), tile=_PA_TILE, chop={"shave": 10, "min_size": min_size},
        source=f"SHI-Labs/Pyramid-Attention-Networks {_PA_TREES[variant]}/code/model/panet.py",
        notes=_PA_NOTES.format(tile=_PA_TILE, min_size=min_size) + " sub_mean/add_mean are in the state_dict but "
              "unused; one PReLU shared by the 80 ResBlocks.",
    )


register_family("panet", "PANet: pyramid (non-local, multi-scale) attention restoration network",
                "denoise/CAR/demosaic", default="dn")
register(_panet("dn", "colour denoising (sigma 10/30/50/70)", 3, 5_957_279, 6800))
register(_panet("car", "JPEG compression artifact removal (q 10/20/30/40) on the Y channel", 1, 5_954_973, 6400,
       image=TensorSpec("image", 1, "Y (skimage rgb2ycbcr, 16..235)/255, float 0..1, NCHW"),
       out=TensorSpec("output", 1, "Y, float 0..1 (not clamped)")))
register(_panet("demosaic", "demosaicing (mosaicked RGB input as the official test files)", 3, 5_957_279, 6400))


def _paedsr(scale: int, params: int) -> ModelSpec:
    return ModelSpec(
        family="paedsr", variant=f"x{scale}", task=f"super-resolution x{scale}", builder="panet:PAEDSR",
        kwargs={"scale": scale, "n_resblocks": 32, "n_feats": 256, "n_colors": 3, "rgb_range": 1,
                "res_scale": 0.1},
        params=params, inputs=(_IMAGE,), outputs=(_OUT,), scale=scale, min_size=2, checkpoint=_PA_CKPT,
        fp16=_PA_FP16, exporters=("legacy",), tile=_PA_TILE, chop={"shave": 10, "min_size": 6400},
        source="SHI-Labs/Pyramid-Attention-Networks SR/code/model/paedsr.py",
        notes=_PA_NOTES.format(tile=_PA_TILE, min_size=6400) + " Attention stored twice (msa.* and body.16.*); "
              "upsampler convs at stride 1 (upstream passes stride=True).",
    )


register_family("paedsr", "PA-EDSR: EDSR-L with pyramid attention (super-resolution)",
                "SR", default="x2")
register(_paedsr(2, 40_811_870))
register(_paedsr(3, 43_762_270))
register(_paedsr(4, 43_172_190))
