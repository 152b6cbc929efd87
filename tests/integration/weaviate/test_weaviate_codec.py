"""The Parquet chunk format on its own: every property type and vector kind survives a round
trip, with vectors as float32 and absent vectors absent (no peer needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from weaviate.classes.data import GeoCoordinate

from davit.adapters.weaviate.codec import Row, decode_rows, encode_rows


def test_rows_round_trip_through_a_parquet_chunk_with_their_types() -> None:
    uid = uuid.uuid4()
    rows = [
        Row(
            uuid=str(uuid.uuid4()),
            properties={
                "t": "ü",
                "i": 3,
                "f": 0.1,
                "b": True,
                "d": datetime(2024, 5, 6, 7, 8, 9, 12, tzinfo=UTC),
                "u": uid,
                "g": GeoCoordinate(latitude=1.5, longitude=-2.25),
                "o": {"k": [1, 2], "n": None},
                "oa": [{"x": "y"}],
                "e": [],
            },
            vectors={"a": [0.5, -1.25], "b": [1.0]},
            multi_vectors={"m": [[1.0, 2.0], [3.0, 4.0]]},
            refs={"writtenBy": [("Author", str(uid))]},
        ),
        Row(uuid=str(uuid.uuid4()), properties={}, vectors={"a": [0.1, 0.2]}),
    ]
    back = decode_rows(encode_rows(rows))
    assert [r.uuid for r in back] == [r.uuid for r in rows]
    # A date comes back as RFC 3339 text, the form the client sends a datetime in.
    assert back[0].properties == {**rows[0].properties, "d": "2024-05-06T07:08:09.000012+00:00"}
    assert back[0].multi_vectors == rows[0].multi_vectors and back[0].refs == rows[0].refs
    assert back[1].vectors.keys() == {"a"} and back[1].multi_vectors == {} and back[1].refs == {}
    import struct

    assert back[1].vectors["a"] == list(struct.unpack("2f", struct.pack("2f", 0.1, 0.2)))  # float32


def test_a_decoded_vector_is_packed_by_the_client_into_the_float32_bytes_it_was_stored_as() -> None:
    import struct

    from weaviate.collections.grpc.shared import _Pack

    stored = [0.1, -2.5, 3.0e-7]
    (row,) = decode_rows(encode_rows([Row(uuid=str(uuid.uuid4()), properties={}, vectors={"v": stored})]))
    vector = row.vectors["v"]
    # The client checks `isinstance(vector, list)` before it packs: a PackedVector must pass.
    assert isinstance(vector, list) and len(vector) == 3
    assert _Pack.parse_single_or_multi_vec(vector).bytes_ == struct.pack("<3f", *stored)
    assert _Pack.single(vector) == struct.pack("<3f", *stored)
