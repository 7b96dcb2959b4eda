"""Street View blurring (the book's chapter 3): find every face and licence plate, blur it."""
