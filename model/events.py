"""TensorBoard scalars for a training run, written without TensorFlow."""

import itertools
import os
import re
import socket
import time

from model.files import writing

EVENTS_NAME = re.compile(r"^events\.out\.tfevents\.\d+\..+\.\d+\.\d+$")  # `Events`' files
_OPENED = itertools.count()  # event files opened by this process


class Events:
    """TensorBoard scalars in a new event file under `path`, written with the `tensorboard`
    package's record format and protocol buffers alone, so a JAX run never loads TensorFlow.
    Each write is flushed, so a killed run keeps what it logged.

    A run resumed at `step` starts its file with TensorBoard's restart marker, a
    `SessionLog.START` at `step + 1`: TensorBoard then drops what earlier files logged from that
    step on (the steps a killed run trained past its last checkpoint), so each step shows once.
    Raises `files.CannotWrite`."""

    def __init__(self, path, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_OPENED)}")  # unique: never truncate an earlier file
        self.path = os.path.join(path, name)
        with writing(self.path):
            os.makedirs(path, exist_ok=True)
            self._records = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(event_pb2.Event(wall_time=time.time(), step=step + 1, session_log=start))

    def scalars(self, step, **values):
        summary = self._summary_pb2.Summary(
            value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                   for tag, value in values.items()]
        )
        self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event):
        with writing(self.path):
            self._records.write(event.SerializeToString())
            self._records.flush()

    def close(self):
        with writing(self.path):
            self._records.close()
