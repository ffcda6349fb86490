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
    package's record format alone (a JAX run never loads TensorFlow), each write flushed.

    The file starts with TensorBoard's restart marker at `step + 1`, so that TensorBoard drops
    what earlier files logged from there on (the steps a killed run trained past its last
    checkpoint) and each step shows once. Raises `files.CannotWrite`."""

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
        self._write(file_version="brain.Event:2")
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(step=step + 1, session_log=start)

    def scalars(self, step, **values):
        Value = self._summary_pb2.Summary.Value
        tagged = [Value(tag=tag, simple_value=float(value)) for tag, value in values.items()]
        self._write(step=step, summary=self._summary_pb2.Summary(value=tagged))

    def _write(self, **fields):
        event = self._event_pb2.Event(wall_time=time.time(), **fields)
        with writing(self.path):
            self._records.write(event.SerializeToString())
            self._records.flush()

    def close(self):
        with writing(self.path):
            self._records.close()
