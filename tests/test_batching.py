from emovox.data.batching import length_grouped_batches


def test_length_grouping_covers_everything_once_and_groups_similar_lengths():
    import random

    rng = random.Random(0)
    lengths = [rng.uniform(0.5, 15.0) for _ in range(500)]
    batches = length_grouped_batches(lengths, 12, shuffle=True, seed=1)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(500))
    grouped_padding = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    order = list(range(500))
    rng.shuffle(order)
    random_batches = [order[i : i + 12] for i in range(0, 500, 12)]
    random_padding = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in random_batches)
    assert grouped_padding < 0.2 * random_padding
    assert batches != length_grouped_batches(lengths, 12, shuffle=True, seed=2)
    assert batches == length_grouped_batches(lengths, 12, shuffle=True, seed=1)


def test_evaluation_batches_are_sorted_longest_first():
    batches = length_grouped_batches([1.0, 5.0, 3.0, 4.0], 2, shuffle=False)
    assert batches == [[1, 3], [2, 0]]
