"""The training configurations shipped with metaal (installed as ``metaal.configs``): ``metaal train
--config NAME`` finds ``NAME.yaml`` here when no such file exists (see :func:`metaal.agents.train.config_path`)."""
