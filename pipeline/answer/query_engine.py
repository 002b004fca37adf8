"""The answerer as a llama-index query engine.

    engine = pipeline.api.as_query_engine(index="indexes/demo", backend="extractive")
    response = engine.query("Ollamaの既定のポートは？")
    response.response        # the checked answer, as `rag ask` prints it
    response.source_nodes    # the cited chunks; metadata["citation"] is their [n]
    response.metadata        # `Answer.to_dict()` (route, sentences, sources) + "verdicts"

`query` runs `Answerer.ask`: router, retrieval or long context, the LLM and the
citation checker, exactly as `rag ask` does. `response.metadata["route"]` is the
router's decision and `response.metadata["verdicts"]` the checker's full verdicts
(`Verdict.to_dict`, with the supporting spans); both are empty of verdicts when the
answer was 「分かりません」 or no checker ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

from pipeline.nodes import chunk_to_node

if TYPE_CHECKING:
    from pipeline.answer.engine import Answer, Answerer, ModeChoice, Policy

__all__ = ["RagQueryEngine", "answer_to_response"]

CITATION_KEY = "citation"  # node metadata: the [n] the answer cites this chunk by


class RagQueryEngine(BaseQueryEngine):
    """`Answerer.ask` behind llama-index's `BaseQueryEngine` (`query`, `aquery`)."""

    def __init__(
        self,
        answerer: "Answerer",
        mode: "ModeChoice" = "auto",
        policy: "Policy | None" = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        self.answerer = answerer
        self.mode = mode
        self.policy = policy
        super().__init__(callback_manager=callback_manager)

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}  # our prompts are not llama-index prompt templates

    def _query(self, query_bundle: QueryBundle) -> Response:
        answer = self.answerer.ask(query_bundle.query_str, mode=self.mode, policy=self.policy)
        return answer_to_response(answer)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._query(query_bundle)


def answer_to_response(answer: "Answer") -> Response:
    """A llama-index `Response`: the shown answer, its cited chunks, and the full record.

    A source counts as cited as in `rag ask --json`: by the answer's own [n] or by the
    checker's fixed citations. Nodes carry no score (the checker scores sentences,
    not sources).
    """
    record = answer.to_dict()
    cited = {s["number"] for s in record["sources"] if s["cited"]}
    nodes = []
    for source in answer.sources:
        if source.number not in cited:
            continue
        node = chunk_to_node(source.chunk)
        node.metadata[CITATION_KEY] = source.number
        node.excluded_embed_metadata_keys.append(CITATION_KEY)
        node.excluded_llm_metadata_keys.append(CITATION_KEY)
        nodes.append(NodeWithScore(node=node))
    verdicts = [v.to_dict() for v in answer.checked.verdicts] if answer.checked is not None else []
    return Response(response=answer.answer, source_nodes=nodes, metadata={**record, "verdicts": verdicts})
