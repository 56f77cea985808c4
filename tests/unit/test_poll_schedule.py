"""When an overdue asynchronous result is polled: at VERIFY_POLL_AFTER_S
after its request, then twice as long each time."""
from crm_enrich.flow.awaiting import next_poll_at


def test_polls_back_off_exponentially_from_the_request():
    pending = {"sent_at": 1000.0, "id": "doc-1"}
    assert next_poll_at(pending, 300) == 1300
    assert next_poll_at({**pending, "polls": 1}, 300) == 1600
    assert next_poll_at({**pending, "polls": 3}, 300) == 1000 + 300 * 8
