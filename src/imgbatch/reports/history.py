"""The history document: a caller's requests newest first, as `GET /api/requests` answers.

The paging itself is the ledger's (`ledger.history`); this turns a page into the public
shape, item fields as the contract names them.
"""

from __future__ import annotations

from typing import Any

from imgbatch import ledger
from imgbatch.context import Context
from imgbatch.errors import ApiError
from imgbatch.ledger import isoformat


def history_document(
    ctx: Context,
    owner: str | None,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """`{"requests": [...], "next_cursor"}`; 400 `bad_cursor` for a malformed cursor."""
    try:
        page = ledger.list_requests(
            ctx.db, owner=owner, status=status, limit=limit, cursor=cursor or None
        )
    except ValueError:
        raise ApiError(
            400, "bad_cursor", "cursor must be the next_cursor of an earlier page"
        ) from None
    return {
        "requests": [
            {
                "request_id": item.request_id,
                "status": item.status,
                "created_at": isoformat(item.created_at),
                "completed_at": isoformat(item.completed_at),
                "filename": item.filename,
                "products": item.products,
                "images": item.images,
                "progress": item.progress.as_dict(),
                "savings": item.savings.as_dict(),
            }
            for item in page.requests
        ],
        "next_cursor": page.next_cursor,
    }
