"""Produces goim PushMsg values to Kafka the way goim's Go logic does, with clients goim-rs did not
write: the message classes come from api/proto compiled here by grpcio-tools (Google's protobuf
runtime encodes them), and confluent-kafka (its own librdkafka) sends them.

Usage: goim_producer.py BROKERS TOPIC PROTO_ROOT

Writes to partition 0, in this order (keys as goim's logic sets them):
  1. PUSH      operation 1000, server "comet-py", keys ["k1", "k2"], msg '{"hello":"keys"}'   key "k1"
  2. ROOM      operation 1001, room "live://py", msg "room"                                    key "live://py"
  3. not a PushMsg at all: b"\\xff\\xff\\xff"                                                  key "junk"
  4. BROADCAST operation 1002, speed 7, msg "all"                                              key "1002"
Exits non-zero unless every message was acked by the broker.
"""

import sys
import tempfile

from confluent_kafka import Producer
from grpc_tools import protoc


def compile_protos(proto_root, out):
    args = [
        "protoc",
        f"-I{proto_root}",
        f"--python_out={out}",
        "goim/protocol/protocol.proto",
        "goim/logic/logic.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto_root}")
    sys.path.insert(0, out)
    from goim.logic import logic_pb2  # noqa: E402  (generated just now)

    return logic_pb2


def main():
    brokers, topic, proto_root = sys.argv[1:4]
    with tempfile.TemporaryDirectory() as out:
        pb = compile_protos(proto_root, out)
        push = pb.PushMsg(type=pb.PushMsg.PUSH, operation=1000, server="comet-py", keys=["k1", "k2"],
                          msg=b'{"hello":"keys"}')
        room = pb.PushMsg(type=pb.PushMsg.ROOM, operation=1001, room="live://py", msg=b"room")
        broadcast = pb.PushMsg(type=pb.PushMsg.BROADCAST, operation=1002, speed=7, msg=b"all")
        records = [
            (b"k1", push.SerializeToString()),
            (b"live://py", room.SerializeToString()),
            (b"junk", b"\xff\xff\xff"),
            (b"1002", broadcast.SerializeToString()),
        ]

    producer = Producer({
        "bootstrap.servers": brokers,
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 10000,
    })
    failures = []

    def report(err, msg):
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=report)
    remaining = producer.flush(15)
    if remaining or failures:
        raise SystemExit(f"produce failed: {remaining} unsent, errors {failures}")
    print(f"produced {len(records)} messages to {topic}")


if __name__ == "__main__":
    main()
