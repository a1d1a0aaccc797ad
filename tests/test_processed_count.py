"""``processed`` is the signal clients (tests, benches, the scale-out frontend) wait on: when it
reaches what they sent, every effect of the batch must be in place, listeners included."""

from monitor.config import Settings
from monitor.events import Event
from monitor.pipeline.builder import build_service


def test_a_batch_is_counted_processed_only_after_its_listeners_ran(embedder):
    service = build_service(Settings(judge="prototype", sampling="off"), embedder=embedder)
    seen_at: list[int] = []
    service.batch_listeners.append(lambda batch: seen_at.append(service.status()["processed"]))
    service.transition_listeners.append(lambda transitions: seen_at.append(service.status()["processed"]))
    try:
        service.process_batch([(Event(f"e{i}", 1.7e9 + i, f"prompt {i}"), 1.0) for i in range(3)])
        assert seen_at == [0, 0] and service.status()["processed"] == 3
    finally:
        service.close()
