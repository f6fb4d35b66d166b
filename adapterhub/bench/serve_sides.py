"""The HTTP servers the serve benchmark compares, each run as its own process.

* ``ours``: ``adapterhub serve``'s app (continuous mixed batching, up to ``rows`` rows).
* ``ours-unbatched``: the same app with one row at a time (batching off).
* ``peft``: a plain PEFT server written the way users write one: FastAPI, one
  ``PeftModel`` holding every adapter, ``set_adapter`` + ``generate`` under a lock
  (one request at a time), answering the same ``/generate`` body (no streaming).
* ``peft-lru``: that server over a registry of many adapters, as users extend it: a missing adapter is
  ``load_adapter``-ed from its registry folder on first use, the least recently used one
  ``delete_adapter``-ed beyond ``--resident``; ``GET /stats`` counts hits, loads, evictions and resident bytes.

``python -m adapterhub.bench.serve_sides SIDE --base B --adapters JSON --port P [--rows N] [--threads T]``
prints ``ready`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any, Callable


def peft_app(base: Any, adapters: dict[str, str]) -> Any:
    """The plain PEFT server (what the bench calls side (b))."""
    from fastapi import FastAPI
    from peft import PeftModel

    names = list(adapters)
    model = PeftModel.from_pretrained(base.model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.eval()
    app = FastAPI()

    def activate(name: str) -> Any:
        model.set_adapter(name)
        return model

    _generate_routes(app, base.tokenizer, activate)
    return app


def peft_lru_app(base: Any, registry_root: str, *, resident: int) -> Any:
    """The plain PEFT server over a registry, loading on a miss and deleting the LRU adapter beyond ``resident``."""
    from collections import OrderedDict

    from fastapi import FastAPI
    from peft import PeftModel

    from ..registry import Registry

    registry = Registry(registry_root)
    tokenizer = base.tokenizer
    state: dict[str, Any] = {"model": None, "hits": 0, "loads": 0, "evictions": 0, "peak_resident_bytes": 0}
    loaded: OrderedDict[str, int] = OrderedDict()  # name -> bytes of its weights, least recently used first
    app = FastAPI()

    def activate(name: str) -> Any:
        model = state["model"]
        if name in loaded:
            state["hits"] += 1
            loaded.move_to_end(name)
        else:
            path = str(registry.get(name).path)
            if model is None:
                model = state["model"] = PeftModel.from_pretrained(base.model, path, adapter_name=name).eval()
            else:
                model.load_adapter(path, adapter_name=name)
            state["loads"] += 1
            loaded[name] = sum(parameter.numel() * parameter.element_size()
                               for key, parameter in model.named_parameters() if f".{name}." in key)
        model.set_adapter(name)
        while len(loaded) > resident:
            evicted, _ = loaded.popitem(last=False)
            model.delete_adapter(evicted)
            state["evictions"] += 1
        state["peak_resident_bytes"] = max(state["peak_resident_bytes"], sum(loaded.values()))
        return model

    lock = _generate_routes(app, tokenizer, activate)

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        with lock:
            return {**{key: value for key, value in state.items() if key != "model"}, "resident": len(loaded),
                    "resident_bytes": sum(loaded.values())}

    return app


def _generate_routes(app: Any, tokenizer: Any, activate: Callable[[str], Any]) -> threading.Lock:
    """``POST /generate`` (one request at a time: ``activate(adapter)`` gives the model set to it, then
    ``generate``) and ``GET /ready``; returns the lock requests take."""
    import torch

    lock = threading.Lock()

    @app.post("/generate")
    def generate(body: dict[str, Any]) -> dict[str, Any]:  # a sync route: FastAPI runs it in its thread pool
        parameters = body.get("parameters") or {}
        new = int(parameters.get("max_new_tokens") or 20)
        with lock, torch.inference_mode():
            model = activate(parameters["adapter_id"])
            inputs = tokenizer(body["inputs"], return_tensors="pt").to(model.device)
            output = model.generate(**inputs, max_new_tokens=new, do_sample=False,
                                    min_new_tokens=new if parameters.get("ignore_eos_token") else 0,
                                    pad_token_id=tokenizer.pad_token_id)
        tokens = output[0, inputs["input_ids"].shape[1]:]
        return {"generated_text": tokenizer.decode(tokens, skip_special_tokens=True),
                "details": {"generated_tokens": int(tokens.numel()), "prompt_tokens": int(inputs["input_ids"].numel())}}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return lock


def ours_app(base: Any, adapters: dict[str, str], *, rows: int, max_new_tokens: int) -> Any:
    from .. import AdapterHub
    from ..serve import ServeOptions, build_app

    hub = AdapterHub(base)
    for name, path in adapters.items():
        hub.load(path, name=name)
    return build_app(hub, ServeOptions(max_rows=rows, max_queue=4096, max_new_tokens=max_new_tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapterhub.bench.serve_sides")
    parser.add_argument("side", choices=["ours", "ours-unbatched", "peft", "peft-lru"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--adapters", default="{}", help='JSON {"name": "folder"}')
    parser.add_argument("--registry", default=None, help="peft-lru: the registry its adapters come from")
    parser.add_argument("--resident", type=int, default=32, help="peft-lru: adapters kept loaded")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import logging
    import time

    import torch
    import uvicorn

    from ..base import load_base

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("adapterhub.access").disabled = True
    base = load_base(args.base, device=args.device, dtype=args.dtype, quantize=args.quantize)
    adapters = json.loads(args.adapters)
    if args.side == "peft":
        app = peft_app(base, adapters)
    elif args.side == "peft-lru":
        app = peft_lru_app(base, args.registry, resident=args.resident)
    else:
        app = ours_app(base, adapters, rows=1 if args.side == "ours-unbatched" else args.rows,
                       max_new_tokens=args.max_new_tokens)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="error",
                                           access_log=False))
    import threading

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            return 1
        time.sleep(0.05)
    print("ready", flush=True)
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
