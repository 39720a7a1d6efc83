"""A short churnwatch query client in Python, built from the proto at start-up.

Usage:
    python client.py [HOST:PORT] [--token TOKEN]

Needs the packages in requirements.txt (grpcio, grpcio-tools). Prints the stage counts, the
retention report and the customers at high risk or above with their reasons.
"""

import argparse
import importlib
import pathlib
import sys
import tempfile

from grpc_tools import protoc

import grpc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load_stubs():
    """Generates the Python modules of churnwatch/v1/query.proto and imports them."""
    out = tempfile.mkdtemp(prefix="churnwatch-proto-")
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "churnwatch" / "v1" / "query.proto"),
        ]
    )
    if code != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT}")
    sys.path.insert(0, out)
    messages = importlib.import_module("churnwatch.v1.query_pb2")
    services = importlib.import_module("churnwatch.v1.query_pb2_grpc")
    return messages, services


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addr", nargs="?", default="127.0.0.1:50051")
    parser.add_argument("--token", help="bearer token, when the service requires one")
    args = parser.parse_args()

    pb, rpc = load_stubs()
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.addr) as channel:
        api = rpc.CustomerQueryStub(channel)

        stages = api.GetStageSummary(pb.GetStageSummaryRequest(), metadata=metadata, timeout=10)
        print(f"{stages.total_customers} customers")
        for s in stages.stages:
            print(f"  {pb.Stage.Name(s.stage):<25} {s.customers}")

        r = api.GetRetentionReport(pb.GetRetentionReportRequest(months=12), metadata=metadata, timeout=30)
        rate = f"{100 * r.retention_rate:.1f}%" if r.HasField("retention_rate") else "-"
        print(f"last 12 months: {r.customers_lost} lost ({r.lost_value_minor / 100:.2f} of value), retention {rate}")

        page = api.ListCustomers(
            pb.ListCustomersRequest(min_risk_level=pb.RISK_LEVEL_HIGH, page_size=5),
            metadata=metadata,
            timeout=10,
        )
        print("at high risk or above, most value at risk first:")
        for c in page.customers:
            why = "; ".join(reason.detail for reason in c.reasons)
            print(f"  {c.customer_id}  {c.value_at_risk_minor / 100:.2f}  {why}")


if __name__ == "__main__":
    main()
