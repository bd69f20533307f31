"""JsonlWriter: one flushed line per input, to a file or a stream such as stdout."""

from __future__ import annotations

import io
import json

from mrseg.outputs.detections import InputItem
from mrseg.outputs.jsonl import JsonlWriter
from mrseg.outputs.records import instance_records


def test_stream_lines_flushed_and_stream_left_open(detections, classes):
    class Recorder(io.StringIO):
        flushes = 0

        def flush(self):
            Recorder.flushes += 1
            super().flush()

    stream = Recorder()
    writer = JsonlWriter(stream)
    instances = instance_records(detections, classes)
    writer.write(InputItem(id=1, path="a.jpg", rel_path="a.jpg"), None, detections, instances)
    assert Recorder.flushes >= 1 and stream.getvalue().count("\n") == 1
    writer.write(InputItem(id=2, path="b.jpg", rel_path="b.jpg"), None, detections, [])
    writer.close()
    assert not stream.closed
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["image"]["id"] for d in lines] == [1, 2]
    public = [{k: v for k, v in i.items() if k != "polygons"} for i in instances]  # exact RLE only
    assert lines[0]["instances"] == json.loads(json.dumps(public))
    assert lines[1]["instances"] == []


def test_file_write_and_append(tmp_path, detections):
    path = tmp_path / "predictions.jsonl"
    w = JsonlWriter(path)
    w.write(InputItem(id=1, path="a", rel_path="a"), None, detections, [])
    assert path.read_text().count("\n") == 1  # visible before close
    w.close()
    w = JsonlWriter(path, append=True)
    w.write(InputItem(id=2, path="b", rel_path="b"), None, detections, [])
    w.close()
    assert [json.loads(x)["image"]["id"] for x in path.read_text().splitlines()] == [1, 2]
