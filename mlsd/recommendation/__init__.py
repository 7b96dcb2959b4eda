"""The book's video recommendation system, pure ML code: candidate generation (matrix
factorisation, popularity, cold start), ranking features and model, reranking rules, and the
offline evaluation protocol."""
