"""One image's input URL, for the dashboard's before/after view.

The view's page may show that input from its own origin (and only there), so the page route
needs the URL before any script runs; the page then reads everything else from the API.
"""

from __future__ import annotations

from sqlalchemy import select

from imgbatch.context import Context
from imgbatch.ledger import Image, Product


def image_input_url(
    ctx: Context, request_id: str, product_position: int, image_position: int
) -> str | None:
    """The input URL of a request's image by 0-based positions (input order), or None."""
    if len(request_id) > 64 or not (request_id.isascii() and request_id.isalnum()):
        return None
    if not (0 <= product_position < 2**31 and 0 <= image_position < 2**31):
        return None
    with ctx.db.session() as session:
        url = session.execute(
            select(Image.input_url)
            .join(Product, Image.product_id == Product.id)
            .where(
                Product.request_id == request_id,
                Product.position == product_position,
                Image.position == image_position,
            )
        ).scalar_one_or_none()
    return url
