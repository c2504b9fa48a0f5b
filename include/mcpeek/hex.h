/* hex: the value of one hexadecimal digit (the HTTP chunk-size parser in http1.c). */
#ifndef MCPEEK_HEX_H
#define MCPEEK_HEX_H

/* 0..15, or -1 when `c` is not a hex digit (either case). */
static inline int hex_digit_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
