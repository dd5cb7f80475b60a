"""Baselines every model is compared with. Torch-free.

``KmerNaiveBayes``: multinomial naive Bayes on both-strand k-mer counts (mambadna.baselines.kmer)::

    from mambadna.baselines import KmerNaiveBayes, fit_kmer_baseline
    nb = fit_kmer_baseline("manifest.tsv", k=6)           # all k-mers of the train records
    nb.predict_proba([tokens_a, tokens_b])                # (2, n_labels)
    nb.save("runs/kmer"); nb = KmerNaiveBayes.load("runs/kmer")
"""

from mambadna.baselines.kmer import KmerNaiveBayes, fit_kmer_baseline, kmer_counts

__all__ = ["KmerNaiveBayes", "fit_kmer_baseline", "kmer_counts"]
