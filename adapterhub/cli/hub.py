"""``adapterhub pull ORG/REPO[@REVISION]`` and ``adapterhub push REF ORG/REPO``."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from ._options import add_registry_option
from ._output import print_fields, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_registry_option(common)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    pull = subparsers.add_parser(
        "pull", parents=[common], help="download an adapter from the Hugging Face Hub into the registry",
        description="Download an adapter (PEFT files, plus our manifest if present) at one commit and register it. "
                    "Honours HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE.")
    pull.add_argument("repo", metavar="ORG/REPO[@REVISION]", help="model repo, optionally @branch/tag/commit "
                      "(hf://ORG/REPO@REVISION works too)")
    pull.add_argument("--name", default=None, help="registry name (default: the manifest's, else the repo name)")
    pull.add_argument("--domain", default=None, help="domain (default: the manifest's, else from the repo name)")
    pull.add_argument("--base", default=None, metavar="MODEL",
                      help="check the adapter fits this base (alias, directory or Hub id) before registering")
    pull.set_defaults(handler=_pull)

    push = subparsers.add_parser(
        "push", parents=[common], help="upload a registered adapter with its manifest and a model card to the Hub",
        description="Create the repo if needed and upload adapter_config.json, adapter_model.safetensors, "
                    "adapterhub.json and README.md in one commit. Needs a write token (HF_TOKEN or `hf auth login`).")
    push.add_argument("ref", metavar="REF", help="registry reference: name, name@3 or name@tag")
    push.add_argument("repo", metavar="ORG/REPO", help="target model repo")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", default="main", help="branch to commit to (created if missing; default main)")
    push.add_argument("--message", default=None, help="commit message")
    push.set_defaults(handler=_push)


def _pull(args: argparse.Namespace) -> int:
    from ..hf import pull
    from ..registry import Registry

    base = None
    if args.base:
        from ..base.loading import load_base

        base = load_base(args.base)
    record = pull(args.repo, registry=Registry(args.registry), name=args.name, domain=args.domain, base=base)
    source = record.manifest.get("source") or {}
    if args.json:
        print_json(record.to_dict())
    else:
        print_fields({"registered": record.ref, "domain": record.domain, "method": record.method,
                      "from": f"hf://{source.get('repo_id')}@{source.get('commit')}", "path": record.path})
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..hf import push
    from ..registry import Registry

    result = push(args.ref, args.repo, registry=Registry(args.registry), private=args.private,
                  revision=args.revision, commit_message=args.message)
    if args.json:
        print_json(asdict(result))
    else:
        print_fields({"pushed": args.ref, "repo": result.repo_id, "revision": result.revision,
                      "commit": result.commit, "url": result.url})
    return 0
