"""The console: lines kept, progress redrawn on a terminal and throttled elsewhere."""

import io

from engine.console import LINE, PROGRESS, Console, QueueLog, eta, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_off_a_terminal_is_a_plain_line_at_most_every_interval_per_stage():
    out, clock = io.StringIO(), Clock()
    console = Console(out, tty=False, every_s=30, clock=clock)
    for second in range(0, 61, 5):
        clock.now = second
        console.progress("predict", f"{second} rows")
        console.progress("train", f"step {second}")
    console.line("=== round 0 done ===")
    lines = out.getvalue().splitlines()
    assert lines == ["  predict: 0 rows", "  train: step 0", "  predict: 30 rows",
                     "  train: step 30", "  predict: 60 rows", "  train: step 60",
                     "=== round 0 done ==="]


def test_progress_on_a_terminal_is_redrawn_and_a_line_clears_it():
    out = io.StringIO()
    console = Console(out, tty=True)
    console.progress("predict", "10/100 rows")
    console.progress("predict", "20/100 rows")
    console.line("done")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("done\n")
    assert text.rindex("20/100") > text.rindex("10/100")
    assert "\r" in text  # the old progress is wiped, not scrolled


def test_queue_log_sends_lines_and_progress_and_survives_a_dead_queue(capsys):
    class FakeQueue:
        def __init__(self):
            self.items = []

        def put_nowait(self, item):
            self.items.append(item)

    queue = FakeQueue()
    log = QueueLog(queue)
    log("[trec r0] train ...")
    progress(log, "predict", "5/10 rows")
    progress(print, "predict", "dropped: print shows no progress")
    assert queue.items == [(LINE, "", "[trec r0] train ..."), (PROGRESS, "predict", "5/10 rows")]
    assert capsys.readouterr().out == "[trec r0] train ...\n"  # kept in the worker's log too

    class DeadQueue:
        def put_nowait(self, item):
            raise RuntimeError("actor died")

    QueueLog(DeadQueue())("still fine")


def test_eta_from_the_rate_so_far():
    assert eta(0, 10, 5.0) == ""
    assert eta(5, 10, 10.0) == "ETA 10s"
    assert eta(1, 10, 20.0) == "ETA 3m00s"
    assert eta(10, 10, 20.0) == ""
