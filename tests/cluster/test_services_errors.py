import pickle

from cluster.services.errors import ServiceError
from transports.errors import BusError


def test_service_error_pickles_with_its_fields_and_message() -> None:
    error = ServiceError("kafka", "not ready within 120 s", "line 1\nline 2")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is ServiceError
    assert vars(clone) == vars(error)
    assert str(clone) == str(error)


def test_service_error_is_a_bus_error_and_shows_the_log_tail_after_the_detail() -> None:
    error = ServiceError("sqs", "exited with code 1", "Traceback ...")
    assert isinstance(error, BusError)
    assert not error.retriable
    assert str(error).startswith("sqs: exited with code 1\n")
    assert str(error).endswith("Traceback ...")
    assert str(ServiceError("sqs", "no log")) == "sqs: no log"
