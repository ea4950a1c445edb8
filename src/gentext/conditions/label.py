"""`--condition label`: lines of `label<TAB>text` (or two CSV columns), each text generated from its label.

Each document is led by its label's mark, a reserved character (data/conditions.py says why and
how), so the feed, the token cache, batching and serving are the plain ones: this condition shapes
the corpus, primes generation with the mark, never samples one, and measures label accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gentext.conditions.base import Condition
from gentext.config import CorpusConfig
from gentext.data.conditions import check_columns, check_label, csv_as_tsv, labelled_documents, mark
from gentext.errors import GentextError
from gentext.inference import conditioning
from gentext.inference.jobs import Prompt
from gentext.runconfig import RunConfig
from gentext.training.mixing import Mixing


class Labelled(Condition):
    name = "label"
    reads = "label<TAB>text lines"
    takes = "label"
    documents = True
    one_stream = False
    marks_documents = True

    def __init__(self, run: RunConfig | None = None):
        super().__init__(run)
        self.labels = list(run.labels) if run is not None else []  # mark i stands for labels[i]
        self.columns = None if run is None else columns(run.corpus)

    def configure(self, corpus_cfg: CorpusConfig, tokenizer_flags: list[str]) -> None:
        corpus_cfg.mode = "lines"

    def check_files(self, files: list[str], config: CorpusConfig) -> None:
        if not config.label_column:
            check_columns(files, self.name)

    def shape(self, pieces: Iterable[str], config: CorpusConfig, labels: dict[str, int]) -> Iterator[str]:
        if config.label_column:
            columns, header = (config.label_column, config.text_column), []  # the header: once per pass
            return (labelled_documents(csv_as_tsv(p, columns, header), labels) for p in pieces)
        return (labelled_documents(p, labels) for p in pieces)

    def prepare(self, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress: bool, origin=None):
        tok, data, record = super().prepare(corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress, origin)
        self.labels, self.columns = list(record.labels), columns(corpus_cfg)
        return tok, data, record

    def mixing(self, tok) -> Mixing:
        """One chain per label, where every label's mark is one token (byte-level BPE spells a
        mark in several bytes other text uses: no chain there)."""
        marks = conditioning.mark_ids(tok, len(self.labels))
        whole = len(marks) == len(self.labels)
        return Mixing(cache=False, chain=whole, marks=marks if whole else None)

    def never_sampled(self, tok) -> list[int]:
        return conditioning.mark_ids(tok, len(self.labels))

    def prompt(self, model, prompt: str, label=None, source=None, image=None) -> Prompt:
        """A newline and the label's mark (how every training document began), then the prompt."""
        self.refuse_inputs(source=source, image=image)
        if label is None:
            raise GentextError(f"this run generates from a label (--label): one of {', '.join(self.labels[:30])}")
        return Prompt(model.tokenizer.encode("\n" + mark(check_label(label, self.labels)) + prompt).tolist())

    def evaluate(self, model, paths, text, **options: Any) -> dict[str, Any]:
        """Each text scored after its label's mark, as trained, and the label accuracy: the share
        of texts most likely under their own label."""
        text = conditioning.marked(self.read(model, paths, text), self.labels, self.columns)
        kept, skipped = model.representable(text, options.pop("unknown", "error"), options.pop("leave_out", ()))
        result = {**model.stream_figures(kept, **options), **skipped}  # the text the accuracy reads too
        pairs = conditioning.pairs_from_marks(kept, self.labels)
        with model.eval_mode():
            result.update(conditioning.label_accuracy(model.model, model.tokenizer, pairs, self.labels, model.device))
        return result

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        lines = []
        if "label_accuracy" in result:
            lines.append(
                f"label accuracy {result['label_accuracy']:.1%} of {result['label_pairs']:,} texts "
                "(each classified by the label under which it is most likely)"
            )
        if "sample_label_accuracy" in result:
            lines.append(
                f"sample label accuracy {result['sample_label_accuracy']:.1%}: generated texts classified as the "
                f"label they were generated from ({result['samples_per_label']} per label)"
            )
        return lines


def columns(corpus: CorpusConfig) -> tuple[str, str] | None:
    """A CSV corpus's label and text columns, or None for label<TAB>text lines."""
    return (corpus.label_column, corpus.text_column) if corpus.label_column else None
