"""lit-vae: Lightning experiments with variational autoencoders on LHC collision events."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """lit_vae.generate_events, imported on first use (it loads torch and the models)."""
    if name == "generate_events":
        from lit_vae.generation import generate_events

        return generate_events
    raise AttributeError(f"module 'lit_vae' has no attribute '{name}'")
