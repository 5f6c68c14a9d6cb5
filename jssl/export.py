"""python -m jssl.export --workdir W --out F.safetensors [--layout torchvision|timm]
[--network student|teacher]

Writes the backbone of the run in W (its latest checkpoint) as a safetensors file in the
PyTorch layout of its kind (``jssl.models.convert``), which PyTorch loads without jssl:

    from safetensors.torch import load_file
    net = torchvision.models.resnet50()
    net.fc = torch.nn.Identity()  # timm: timm.create_model("vit_small_patch16_224", num_classes=0)
    net.load_state_dict(load_file("F.safetensors"))

The network reads RGB in [0, 1] without mean/std normalisation, as it did in jssl (the file's
metadata says so, and ``config.init_from.weights`` reads it back unchanged).
"""

from __future__ import annotations

import os
import sys

from jssl.models import convert


def backbone_variables(run, network: str) -> dict:
    """The ``{"params", "batch_stats"}`` of a restored run's backbone ("student" or "teacher")."""
    from jssl.errors import UserError
    from jssl.evaluation import network_variables

    variables = network_variables(run.state, network, teacher=run.experiment.method.teacher)
    params, stats = variables["params"], variables.get("batch_stats")
    if "backbone" not in params:
        raise UserError(
            f"the {run.config.method} run in {run.workdir} has no backbone (its parameters: "
            f"{sorted(params)}); export a run whose model has one"
        )
    return {"params": params["backbone"], "batch_stats": (stats or {}).get("backbone", {})}


def export(workdir: str, out: str, *, layout: str | None = None, network: str | None = None):
    """Writes the run's backbone to ``out`` (.safetensors); returns (path, layout, network).

    ``layout``: None for the backbone's own (torchvision for a ResNet, timm for a ViT); another
    one is an error. ``network``: None for the teacher when the method evaluates one (DINO),
    else the student.
    """
    import jax
    from safetensors.numpy import save_file

    from jssl.errors import UserError
    from jssl.experiment import restore_run

    if not out.endswith(".safetensors"):
        raise UserError(f"--out={out}: give a .safetensors path")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UserError(f"--out={out}: the folder {folder} does not exist; create it first")
    run = restore_run(workdir)
    if network is None:
        network = run.experiment.method.default_network
    variables = jax.device_get(backbone_variables(run, network))
    own = convert.layout_of(variables)
    if layout is not None and layout != own:
        raise UserError(
            f"--layout={layout}: the {run.config.model.name} backbone of {workdir} has the "
            f"{own} layout (ResNets: torchvision, ViTs: timm); use --layout={own}"
        )
    tensors = convert.to_torch(variables)
    metadata = {
        "format": "pt",
        convert.INPUT_METADATA_KEY: convert.INPUT_METADATA,
        "jssl_layout": own,
        "jssl_model": str(run.config.model.name),
        "jssl_method": str(run.config.method),
        "jssl_network": network,
        "jssl_step": str(int(jax.device_get(run.state.step))),
    }
    save_file(tensors, out, metadata=metadata)
    return out, own, network


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status: 0, or 1 after one ``error:`` line for a user error
    (``--traceback`` or ``-v 1`` raises it instead)."""
    from jssl import cli

    parser = cli.ArgumentParser(
        prog="python -m jssl.export",
        description="The backbone of a jssl run as a PyTorch-layout .safetensors file.",
    )
    parser.add_argument("--workdir", required=True, help="run folder (config.json, checkpoints/)")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument(
        "--layout", choices=convert.LAYOUTS, default=None, help="default: the backbone's own"
    )
    parser.add_argument(
        "--network", choices=("student", "teacher"), default=None,
        help="default: the teacher when the method evaluates one (DINO), else the student",
    )  # fmt: skip
    parser.add_argument("--traceback", action="store_true", help="on an error, the traceback")
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="1: as --traceback")
    args = parser.parse_args(argv)
    try:
        from jssl import validation

        validation.validate_saved_run(args.workdir)  # every problem before anything is loaded
        path, layout, network = export(
            args.workdir, args.out, layout=args.layout, network=args.network
        )
    except cli.user_error_types() as e:
        if args.traceback or args.verbosity >= 1:
            raise
        cli.print_error(e)
        return 1
    print(f"{path}: the {network}'s backbone, {layout} layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
