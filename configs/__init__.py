"""The model configs, one ``configs/<name>.py`` per model (``get_config()`` returns its
``ml_collections.ConfigDict``; configs with named variants list them in ``VARIANTS``).

Launchers read them with ``--config=configs/<name>.py[:variant]`` (``config_flags``); code loads
them with :func:`d2m_jax.configs.load` (the same parser), e.g.
``load("style_paper", {"model.hidden": 8})``.
"""
