"""noiseattack: does a normalization or attention layer survive batch noise? A harness for the IEBN attacks.

The Python API (imported on first use, so that `import noiseattack` stays light):

    run(attack, norms, **options)        train a setting for every norm and seed (noiseattack.api.run)
    load_results(paths)                  one dict per run (noiseattack.api.load_results)
    make_report(dirs, out_dir)           statistics, verdicts and plots (noiseattack.api.make_report)
    write_tensorboard(dirs)              TensorBoard logs rebuilt from run records (noiseattack.api)
    register_norm(name, factory, description)         add a layer (noiseattack.zoo)
    register_attention(name, factory, description)    add an attention module for NORM+ATTN
    make_norm(name, channels), norm_names(), attention_names(), describe_layers()
    ConfigError                          the one exception for bad input
"""

__version__ = "0.1.0"

_API = {
    "run": "api", "load_results": "api", "make_report": "api", "write_tensorboard": "api",
    "register_norm": "zoo", "register_attention": "zoo", "make_norm": "zoo", "norm_names": "zoo",
    "attention_names": "zoo", "describe_layers": "zoo", "ConfigError": "errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'noiseattack' has no attribute '{name}'")
