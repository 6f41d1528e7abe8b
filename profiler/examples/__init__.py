"""The bundled example model server and its hold-out data, used by the demo and the tests."""
