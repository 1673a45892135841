import pytest


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A private MLflow store (SQLite file) and data folder for one test."""
    import mlflow

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DXV_DATA_DIR", str(tmp_path / "data"))
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
