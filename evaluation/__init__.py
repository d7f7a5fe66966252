"""evaluation: caption quality scores (BLEU, ROUGE-L, CIDEr, METEOR) over stored captions and reference captions."""
